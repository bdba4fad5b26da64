//! From normalised cells to profiles (evaluation.md §1.2–1.3): batch-level nodes P (gene or sgRNA per
//! batch, plus NTC sgRNA nodes with `--include-ntc`) and consensus gene profiles C[g].
//!
//! Key decisions: nodes are numbered in order of first appearance in the cell table (the kNN tie rule
//! refers to this order); means are taken in f64 in the normalised space and projected afterwards (the
//! PCA is affine, so this equals the mean of projected cells); profiles are stored as f32, and every
//! metric is computed from exactly the stored f32 values, which are what `--dump-profiles` writes.
//! C[g] is always built from gene-level P[g, b], also with `--level sgrna`.
use super::io::{CellTable, Features};
use super::normalize::Normalizer;
use anyhow::Result;
use rayon::prelude::*;
use std::collections::HashMap;

/// Marks a cell that belongs to no group.
pub const NONE: u32 = u32::MAX;

/// What a batch-level node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Gene,
    Sgrna,
}

/// Batch-level profiles. x: (n, d) row-major f32; per node: batch, gene, sgRNA (table ids; for
/// gene-level gene nodes sgrna = NONE), NTC flag, number of cells.
#[derive(Clone, Debug)]
pub struct Nodes {
    pub n: usize,
    pub d: usize,
    pub x: Vec<f32>,
    pub batch: Vec<u32>,
    pub gene: Vec<u32>,
    pub sgrna: Vec<u32>,
    pub is_ntc: Vec<bool>,
    pub n_cells: Vec<u32>,
}

/// Consensus gene profiles: genes (table gene ids, non-NTC), x: (G, d), batches per gene.
#[derive(Clone, Debug)]
pub struct Consensus {
    pub genes: Vec<u32>,
    pub d: usize,
    pub x: Vec<f32>,
    pub n_batches: Vec<u32>,
}

/// Everything `profiles::build` produces. ntc_mean: (B, d) mean of each batch's NTC cells in the
/// normalised space (zero and has_ntc = false for a batch without NTC cells).
pub struct Profiles {
    pub nodes: Nodes,
    pub consensus: Consensus,
    pub ntc_mean: Vec<f32>,
    pub has_ntc: Vec<bool>,
}

/// Means of the normalised cells of each group. assign: (N) group id or NONE. Returns means: (G, d_out)
/// f32 and counts: (G). Parallel over groups; each group's rows are read from the (mapped) matrix.
pub fn group_means(
    feat: &Features,
    table: &CellTable,
    norm: &Normalizer,
    assign: &[u32],
    n_groups: usize,
) -> Result<(Vec<f32>, Vec<u32>)> {
    let mut counts = vec![0u32; n_groups];
    for &g in assign.iter().filter(|&&g| g != NONE) {
        counts[g as usize] += 1;
    }
    let mut start = vec![0usize; n_groups + 1];
    for g in 0..n_groups {
        start[g + 1] = start[g] + counts[g] as usize;
    }
    let mut fill = start.clone();
    let mut cells = vec![0u32; start[n_groups]];
    for (i, &g) in assign.iter().enumerate() {
        if g != NONE {
            cells[fill[g as usize]] = i as u32;
            fill[g as usize] += 1;
        }
    }
    let (d, dout) = (feat.d, norm.d_out());
    let mut out = vec![0f32; n_groups * dout];
    out.par_chunks_mut(dout.max(1))
        .enumerate()
        .try_for_each(|(g, o)| -> Result<()> {
            let mut sum = vec![0.0f64; d];
            let mut row = vec![0.0f64; d];
            let members = &cells[start[g]..start[g + 1]];
            for &i in members {
                let i = i as usize;
                feat.row_into(i, &mut row)?;
                norm.affine(table.batch[i] as usize, &mut row);
                for (s, v) in sum.iter_mut().zip(&row) {
                    *s += v;
                }
            }
            if members.is_empty() {
                return Ok(());
            }
            sum.iter_mut().for_each(|s| *s /= members.len() as f64);
            for (o, v) in o.iter_mut().zip(norm.project(&sum)) {
                *o = v as f32;
            }
            Ok(())
        })?;
    Ok((out, counts))
}

/// Builds the batch-level nodes, the NTC means per batch and the consensus profiles.
pub fn build(
    feat: &Features,
    table: &CellTable,
    norm: &Normalizer,
    level: Level,
    include_ntc: bool,
) -> Result<Profiles> {
    let n = table.len();
    let nb = table.batches.len();
    let dout = norm.d_out();
    // Nodes, numbered in order of first appearance.
    let mut key_to_node: HashMap<(bool, u32, u32), u32> = HashMap::new();
    let mut node_cell = Vec::new();
    let mut assign = vec![NONE; n];
    for (i, slot) in assign.iter_mut().enumerate() {
        let (b, ntc) = (table.batch[i], table.is_ntc[i]);
        let entity = match (ntc, level) {
            (true, _) if !include_ntc => continue,
            (true, _) | (false, Level::Sgrna) => table.sgrna[i],
            (false, Level::Gene) => table.gene[i],
        };
        let next = key_to_node.len() as u32;
        let id = *key_to_node.entry((ntc, entity, b)).or_insert_with(|| {
            node_cell.push(i);
            next
        });
        *slot = id;
    }
    let nn = node_cell.len();
    let (x, n_cells) = group_means(feat, table, norm, &assign, nn)?;
    let nodes = Nodes {
        n: nn,
        d: dout,
        x,
        batch: node_cell.iter().map(|&i| table.batch[i]).collect(),
        gene: node_cell.iter().map(|&i| table.gene[i]).collect(),
        sgrna: node_cell
            .iter()
            .map(|&i| {
                if level == Level::Gene && !table.is_ntc[i] {
                    NONE
                } else {
                    table.sgrna[i]
                }
            })
            .collect(),
        is_ntc: node_cell.iter().map(|&i| table.is_ntc[i]).collect(),
        n_cells,
    };
    // NTC means per batch.
    let ntc_assign: Vec<u32> = (0..n)
        .map(|i| {
            if table.is_ntc[i] {
                table.batch[i]
            } else {
                NONE
            }
        })
        .collect();
    let (ntc_mean, ntc_counts) = group_means(feat, table, norm, &ntc_assign, nb)?;
    let has_ntc: Vec<bool> = ntc_counts.iter().map(|&c| c > 0).collect();
    // Gene-level P[g, b] (reuse the nodes at gene level).
    let gene_level: (Vec<f32>, Vec<u32>, Vec<u32>) = if level == Level::Gene {
        let keep: Vec<usize> = (0..nn).filter(|&k| !nodes.is_ntc[k]).collect();
        let mut px = Vec::with_capacity(keep.len() * dout);
        for &k in &keep {
            px.extend_from_slice(&nodes.x[k * dout..(k + 1) * dout]);
        }
        (
            px,
            keep.iter().map(|&k| nodes.gene[k]).collect(),
            keep.iter().map(|&k| nodes.batch[k]).collect(),
        )
    } else {
        let mut map: HashMap<(u32, u32), u32> = HashMap::new();
        let mut first = Vec::new();
        let mut ga = vec![NONE; n];
        for (i, slot) in ga.iter_mut().enumerate() {
            if table.is_ntc[i] {
                continue;
            }
            let next = map.len() as u32;
            *slot = *map
                .entry((table.gene[i], table.batch[i]))
                .or_insert_with(|| {
                    first.push(i);
                    next
                });
        }
        let (px, _) = group_means(feat, table, norm, &ga, first.len())?;
        (
            px,
            first.iter().map(|&i| table.gene[i]).collect(),
            first.iter().map(|&i| table.batch[i]).collect(),
        )
    };
    let consensus = consensus(&gene_level.0, &gene_level.1, &gene_level.2, &ntc_mean, dout);
    Ok(Profiles {
        nodes,
        consensus,
        ntc_mean,
        has_ntc,
    })
}

/// C[g] = mean over the batches b holding g of (P[g, b] − ntc_mean[b]), in f64, stored as f32.
/// p: (M, d) gene-level batch profiles with their gene and batch ids; ntc_mean: (B, d).
/// Genes are ordered by first appearance in p.
pub fn consensus(p: &[f32], gene: &[u32], batch: &[u32], ntc_mean: &[f32], d: usize) -> Consensus {
    let mut order: Vec<u32> = Vec::new();
    let mut slot: HashMap<u32, usize> = HashMap::new();
    for &g in gene {
        slot.entry(g).or_insert_with(|| {
            order.push(g);
            order.len() - 1
        });
    }
    let mut sum = vec![0.0f64; order.len() * d];
    let mut cnt = vec![0u32; order.len()];
    for (m, (&g, &b)) in gene.iter().zip(batch).enumerate() {
        let s = slot[&g];
        cnt[s] += 1;
        let (row, c) = (
            &p[m * d..(m + 1) * d],
            &ntc_mean[b as usize * d..(b as usize + 1) * d],
        );
        for j in 0..d {
            sum[s * d + j] += row[j] as f64 - c[j] as f64;
        }
    }
    let x = sum
        .chunks_exact(d.max(1))
        .zip(&cnt)
        .flat_map(|(r, &c)| r.iter().map(move |v| (v / c as f64) as f32))
        .collect();
    Consensus {
        genes: order,
        d,
        x,
        n_batches: cnt,
    }
}
