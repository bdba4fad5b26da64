//! `store merge`: join the partial stores of a sharded ingest (`ingest --shard I/N`, one per job part)
//! into the store that a one-process ingest writes.
//!
//! Key decision: the cells are appended again through the ordinary [`StoreWriter`], part after part, so
//! the index, the shard files, the dictionaries (first-seen order), the batch ids and the NTC statistics
//! (exact histograms of the stored u16 crops) are computed by the same code from the same cells in the
//! same order as in one process, and come out identical; nothing is averaged. Every crop is checked
//! against its CRC-32 as it is read. Parts that disagree (channels, crop, dtype, normalisation settings,
//! inputs), repeat a part or miss one are refused, naming the part and what differs.
use super::format::Manifest;
use super::reader::Store;
use super::writer::{CellMeta, StoreWriter, WriterOptions};
use crate::util::part::JobPart;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One partial store and what its report says it is.
struct Part {
    path: PathBuf,
    store: Store,
    report: Value,
    part: JobPart,
}

/// Cells copied per batch (the crops of a batch are held in memory).
const CHUNK: usize = 1024;

/// At most this many skipped cells are listed in the merged report (as in one ingest).
const SKIPPED_LISTED: usize = 10_000;

fn open_part(path: &Path) -> Result<Part> {
    let store = Store::open(path).with_context(|| format!("part {}", path.display()))?;
    let report = store
        .report()
        .with_context(|| format!("part {}", path.display()))?;
    let Some(info) = report.get("part") else {
        bail!(
            "{}: not a job part of a sharded ingest (its report.json has no `part`); HINT: `store merge` joins \
             the stores written by `setdino ingest --shard I/N`",
            path.display()
        );
    };
    let part: JobPart = serde_json::from_value(info.clone()).with_context(|| {
        format!(
            "{}: report.json `part` is not a part index and count; HINT: the store is damaged",
            path.display()
        )
    })?;
    Ok(Part {
        path: path.to_path_buf(),
        store,
        report,
        part,
    })
}

/// What two parts must share: the manifest's layout and every ingest setting recorded with the part.
fn shared_fields(p: &Part) -> Vec<(&'static str, Value)> {
    let m = p.store.manifest();
    let mut v: Vec<(&'static str, Value)> = vec![
        ("store format version", Value::from(m.version)),
        ("channels", Value::from(m.channels.clone())),
        ("crop", Value::from(m.crop)),
        ("dtype", Value::from(m.dtype.clone())),
        ("NTC gene", Value::from(m.ntc_gene.clone())),
        ("metadata columns", Value::from(m.meta_columns.clone())),
    ];
    const SETTINGS: [(&str, &str); 8] = [
        ("illum", "flat-field (--illum)"),
        ("clip_percentiles", "clip percentiles (--clip)"),
        ("ntc_gene", "--ntc-gene"),
        (
            "cells_per_shard",
            "crops per shard file (--cells-per-shard)",
        ),
        ("tiles", "number of tiles in tiles.csv"),
        ("tiles_crc32", "tile list (plate, well, tile) of tiles.csv"),
        ("cells_in_table", "rows of the cell table"),
        ("channels", "--channels"),
    ];
    let s = &p.report["part"]["settings"];
    v.extend(SETTINGS.iter().map(|&(k, name)| (name, s[k].clone())));
    v
}

/// Refuse parts that were not written by one sharded ingest: every shared field equal to part 0's.
fn check_agree(parts: &[Part]) -> Result<()> {
    let first = &parts[0];
    let want = shared_fields(first);
    for p in &parts[1..] {
        let got = shared_fields(p);
        let differs = want.iter().zip(&got).find(|((_, a), (_, b))| a != b);
        if let Some(((what, a), (_, b))) = differs {
            bail!(
                "part {} ({}) differs from part {} ({}) in its {what}: {b} vs {a}; HINT: every part must come from \
                 the same `setdino ingest … --shard I/N` command with the same inputs",
                p.part.index,
                p.path.display(),
                first.part.index,
                first.path.display()
            );
        }
    }
    Ok(())
}

/// The metadata of cell `k` of `store`, as the writer was given it (`extra`: its meta.tsv row).
fn cell_meta(store: &Store, k: usize, extra: Vec<String>) -> CellMeta {
    let (m, r) = (store.manifest(), store.record(k));
    CellMeta {
        plate: m.plates[r.plate as usize].clone(),
        well: m.wells[r.well as usize].clone(),
        tile: r.tile,
        cell_id: r.cell_id,
        i: r.i,
        j: r.j,
        gene: m.genes[r.gene as usize].clone(),
        sgrna: m.sgrnas[r.sgrna as usize].clone(),
        extra,
    }
}

/// Append every cell of `p`, in its order, to `w` (crops CRC-checked).
fn copy_cells(p: &Part, w: &mut StoreWriter) -> Result<()> {
    let s = &p.store;
    let mut extra = s.read_meta()?.into_iter();
    let mut crops: Vec<u16> = Vec::with_capacity(CHUNK.min(s.len()) * s.crop_len());
    let mut metas: Vec<CellMeta> = Vec::with_capacity(CHUNK.min(s.len()));
    for start in (0..s.len()).step_by(CHUNK) {
        crops.clear();
        metas.clear();
        for k in start..(start + CHUNK).min(s.len()) {
            crops.extend_from_slice(s.crop_u16(k)?);
            metas.push(cell_meta(s, k, extra.next().unwrap_or_default()));
        }
        w.push(&metas, &crops)
            .with_context(|| format!("copying part {}", p.path.display()))?;
    }
    Ok(())
}

/// Sum of a numeric report field over the parts.
fn sum(parts: &[Part], get: impl Fn(&Value) -> &Value) -> u64 {
    parts
        .iter()
        .map(|p| get(&p.report).as_u64().unwrap_or(0))
        .sum()
}

/// The per-plate entries of all parts, one per plate (a plate split between parts: tile and cell counts
/// summed; the flat field and clip bounds are the same in every part).
fn merged_plates(parts: &[Part]) -> Vec<Value> {
    let mut plates: Vec<Value> = Vec::new();
    for e in parts
        .iter()
        .flat_map(|p| p.report["plates"].as_array().into_iter().flatten())
    {
        match plates.iter_mut().find(|x| x["plate"] == e["plate"]) {
            None => plates.push(e.clone()),
            Some(x) => {
                for key in ["tiles", "cells_written"] {
                    x[key] =
                        Value::from(x[key].as_u64().unwrap_or(0) + e[key].as_u64().unwrap_or(0));
                }
                let edge = |v: &Value| v["skipped"]["box_leaves_tile"].as_u64().unwrap_or(0);
                x["skipped"]["box_leaves_tile"] = Value::from(edge(x) + edge(e));
            }
        }
    }
    plates
}

/// report.json of the merged store: part 0's settings, counts summed over the parts, plates joined,
/// skipped cells and warnings listed in part order, and the parts themselves.
fn merged_report(parts: &[Part]) -> Value {
    let first = &parts[0].report;
    let mut r = first.clone();
    let skipped: Vec<Value> = parts
        .iter()
        .flat_map(|p| {
            p.report["skipped_cells"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let edge = sum(parts, |v| &v["skipped"]["box_leaves_tile"]);
    let mut warnings: Vec<Value> = Vec::new();
    for w in parts
        .iter()
        .flat_map(|p| p.report["warnings"].as_array().cloned().unwrap_or_default())
    {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    let seconds: f64 = parts
        .iter()
        .map(|p| p.report["seconds"].as_f64().unwrap_or(0.0))
        .sum();
    let obj = serde_json::json!({
        "tiles": sum(parts, |v| &v["tiles"]),
        "tile_reads": sum(parts, |v| &v["tile_reads"]),
        "cells_written": sum(parts, |v| &v["cells_written"]),
        "skipped": {"box_leaves_tile": edge},
        "skipped_cells_truncated": edge > skipped.len().min(SKIPPED_LISTED) as u64,
        "skipped_cells": skipped.into_iter().take(SKIPPED_LISTED).collect::<Vec<_>>(),
        "plates": merged_plates(parts),
        "warnings": warnings,
        "seconds": seconds,
        "merged_from": parts.iter().map(|p| serde_json::json!({
            "part": p.part.index, "of": p.part.count, "store": p.path,
            "cells": p.store.len(), "tiles": p.report["part"]["tiles"],
        })).collect::<Vec<_>>(),
    });
    if let (Some(r), Value::Object(o)) = (r.as_object_mut(), obj) {
        r.remove("part");
        r.remove("tiles_per_second");
        r.extend(o);
    }
    r
}

/// Join the partial stores at `parts` (any order) into a new store at `out` (replacing a store there
/// only with `force`). Stages: open the parts, order them and check that each of 0…N−1 is there once,
/// check that they agree, copy their cells in part order through one writer, write the merged report.
pub fn merge(parts: &[PathBuf], out: &Path, force: bool) -> Result<Manifest> {
    let opened = parts
        .iter()
        .map(|p| open_part(p))
        .collect::<Result<Vec<_>>>()?;
    let ordered = JobPart::in_order(opened, |p| p.part, |p| p.path.display().to_string())?;
    check_agree(&ordered)?;
    let m = ordered[0].store.manifest();
    let mut wo = WriterOptions::new(m.crop, m.channels.clone());
    wo.ntc_gene = m.ntc_gene.clone();
    wo.meta_columns = m.meta_columns.clone();
    wo.force = force;
    wo.created_by = format!(
        "setdino {} ingest --shard */{} + store merge",
        env!("CARGO_PKG_VERSION"),
        ordered.len()
    );
    if let Some(n) = ordered[0].report["part"]["settings"]["cells_per_shard"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
    {
        wo.cells_per_shard = n;
    }
    let mut w = StoreWriter::create(out, wo)?;
    for p in &ordered {
        copy_cells(p, &mut w)?;
    }
    w.finish(merged_report(&ordered))
}
