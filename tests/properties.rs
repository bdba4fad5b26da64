//! Property tests (proptest): the set sampler's invariants on random screens, the bounds of drawn
//! augmentation parameters and rendered crops, and the store's write/read round trip.
use proptest::prelude::*;
use setdino::data::augment::crop_params;
use setdino::data::{
    make_step, AugmentCompat, AugmentConfig, GroupBy, NormKind, Normalizer, Sampler, SamplerConfig,
    Strategy,
};
use setdino::store::{CellMeta, Store, StoreWriter, WriterOptions};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Deterministic pseudo-random u16 values (xorshift) from `seed`.
fn values(seed: u64, n: usize) -> Vec<u16> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 48) as u16
        })
        .collect()
}

/// A screen: `counts[b * genes + g]` cells of gene `g` in batch `b` (plate b / 2, well b % 2); the
/// sgRNA is a function of the gene, so grouping by either gives the same groups. C = 1, crop 4.
fn screen(dir: &Path, genes: usize, counts: &[usize], seed: u64) -> (Store, Vec<CellMeta>) {
    let mut w = StoreWriter::create(dir, WriterOptions::new(4, vec!["dna".into()])).unwrap();
    let mut metas = Vec::new();
    for (k, &c) in counts.iter().enumerate() {
        let (b, g) = (k / genes, k % genes);
        for _ in 0..c {
            metas.push(CellMeta {
                plate: format!("P{}", b / 2),
                well: format!("W{}", b % 2),
                tile: 0,
                cell_id: metas.len() as u64,
                i: 0.0,
                j: 0.0,
                gene: format!("g{g}"),
                sgrna: format!("s{g}"),
                extra: vec![],
            });
        }
    }
    // Interleave the groups so cells of a group are not contiguous in the store.
    let mut order: Vec<usize> = (0..metas.len()).collect();
    order.sort_by_key(|&k| values(seed ^ k as u64, 1)[0]);
    let metas: Vec<CellMeta> = order.iter().map(|&k| metas[k].clone()).collect();
    let crops = values(seed, metas.len() * 16);
    w.push(&metas, &crops).unwrap();
    w.finish(serde_json::json!({})).unwrap();
    (Store::open(dir).unwrap(), metas)
}

fn strategy_of(k: u8) -> Strategy {
    [
        Strategy::CrossBatch,
        Strategy::WithinBatch,
        Strategy::SameCells,
    ][k as usize % 3]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every set has n distinct in-range cells of its perturbation from the batch of its view; cross-batch
    /// views come from two different wells; the perturbations kept are exactly those the filtering rule
    /// admits; a step is a pure function of (seed, step); a step's crops have the documented shapes.
    #[test]
    fn sampler_sets_are_valid_and_deterministic(
        genes in 1usize..4,
        batches in 1usize..5,
        counts_raw in proptest::collection::vec(0usize..9, 16),
        n in 1usize..4,
        extra_min in 0usize..3,
        sets in 1usize..4,
        min_batches in 1usize..3,
        repeats in 1usize..3,
        strategy in 0u8..3,
        by_sgrna in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // The writer refuses an empty store, so every screen has at least one cell.
        let mut counts = counts_raw[..genes * batches].to_vec();
        if counts.iter().all(|&c| c == 0) {
            counts[0] = 1;
        }
        let counts = &counts[..];
        let dir = tempfile::tempdir().unwrap();
        let (store, metas) = screen(dir.path(), genes, counts, seed);
        let cfg = SamplerConfig {
            group_by: if by_sgrna { GroupBy::Sgrna } else { GroupBy::Gene },
            strategy: strategy_of(strategy),
            set_size: n,
            sets_per_step: sets,
            min_cells: Some(n + extra_min),
            min_batches,
            repeats_per_epoch: Some(repeats),
            seed,
            ..Default::default()
        };
        // The filtering rule (algorithm.md §6.1), computed independently.
        let need_batches = if cfg.strategy == Strategy::CrossBatch { min_batches.max(2) } else { min_batches };
        let kept: Vec<usize> = (0..genes)
            .filter(|&g| (0..batches).filter(|&b| counts[b * genes + g] >= n + extra_min).count() >= need_batches)
            .collect();
        let sampler = Sampler::new(&store, cfg.clone());
        if kept.is_empty() || kept.len() * repeats < sets {
            prop_assert!(sampler.is_err(), "kept {kept:?}, yet the sampler was built");
            return Ok(());
        }
        let s = sampler.unwrap();
        let m = store.manifest();
        let dict = if by_sgrna { &m.sgrnas } else { &m.genes };
        let mut names: Vec<String> = s.perts().iter().map(|p| dict[p.id as usize].clone()).collect();
        names.sort();
        let prefix = if by_sgrna { "s" } else { "g" };
        let want: Vec<String> = kept.iter().map(|g| format!("{prefix}{g}")).collect();
        prop_assert_eq!(names, want);
        let again = Sampler::new(&store, cfg).unwrap();
        for t in (0..4).chain([s.steps_per_epoch(), 3 * s.steps_per_epoch() + 1]) {
            let draws = s.sample_step(t);
            prop_assert_eq!(&draws, &again.sample_step(t), "step {} is a function of (seed, step)", t);
            prop_assert_eq!(&draws, &s.sample_step(t));
            prop_assert_eq!(draws.len(), sets);
            for d in &draws {
                for v in 0..2 {
                    prop_assert_eq!(d.cells[v].len(), n);
                    let uniq: HashSet<u32> = d.cells[v].iter().copied().collect();
                    prop_assert_eq!(uniq.len(), n, "no cell twice in a view");
                    for &k in &d.cells[v] {
                        prop_assert!((k as usize) < store.len());
                        let r = store.record(k as usize);
                        let p = if by_sgrna { r.sgrna } else { r.gene };
                        prop_assert_eq!(p, d.pert, "one perturbation per set");
                        prop_assert_eq!(r.batch, d.batches[v], "a view's cells come from its batch");
                        let meta = &metas[k as usize];
                        prop_assert_eq!(&m.batch_name(d.batches[v]), &format!("{}_{}", meta.plate, meta.well));
                    }
                }
                match strategy_of(strategy) {
                    Strategy::CrossBatch => prop_assert_ne!(d.batches[0], d.batches[1], "two different wells"),
                    Strategy::WithinBatch => prop_assert_eq!(d.batches[0], d.batches[1]),
                    Strategy::SameCells => prop_assert_eq!(&d.cells[0], &d.cells[1]),
                }
            }
        }
        let acfg = AugmentConfig { n_local: 2, ..AugmentConfig::for_crop(4) };
        let norm = Normalizer::new(NormKind::None, &store);
        let crops = make_step(&store, &s.sample_step(0), &acfg, &norm, 0).unwrap();
        let r = sets * n;
        prop_assert_eq!(crops.global.len(), 2 * r * 4 * 4);
        prop_assert_eq!(crops.local.len(), 2 * r * 2 * 2);
        prop_assert!(crops.global.iter().chain(&crops.local).all(|x| (0.0..=1.0).contains(x)));
    }

    /// Drawn crop windows lie inside the source crop, global windows are square, photometric parameters
    /// lie in their ranges, and rendered crops have the requested shape with values in [0, 1].
    #[test]
    fn augmentation_stays_in_bounds(
        crop in 2usize..48,
        channels in 1usize..4,
        zoom_lo in 0.3f64..1.0,
        zoom_w in 0.0f64..1.0,
        scale_lo in 0.1f64..0.9,
        scale_w in 0.0f64..1.0,
        center_frac in 0.0f64..1.2,
        paper in any::<bool>(),
        key in (any::<u64>(), 0u64..1000, 0usize..64, 0usize..64, 0u64..10),
        out_frac in 0.2f64..1.5,
    ) {
        let (seed, step, set, slot, crop_index) = key;
        let cfg = AugmentConfig {
            zoom: (zoom_lo, zoom_lo + (1.0 - zoom_lo) * zoom_w),
            local_scale: (scale_lo, scale_lo + (0.95 - scale_lo) * scale_w),
            local_center: (center_frac * crop as f64) as usize,
            compat: if paper { AugmentCompat::Paper } else { AugmentCompat::Fixed },
            seed,
            ..AugmentConfig::for_crop(crop)
        };
        let p = crop_params(&cfg, crop, channels, step, set, slot, crop_index);
        prop_assert!(p.rows >= 1 && p.cols >= 1);
        prop_assert!(p.r0 + p.rows <= crop && p.c0 + p.cols <= crop, "{p:?} inside {crop}×{crop}");
        if crop_index < 2 {
            prop_assert_eq!(p.rows, p.cols, "global windows are square");
            let lo = ((crop as f64 * cfg.zoom.0).floor() as usize).clamp(1, crop);
            prop_assert!(p.rows >= lo, "zoom side {} below {lo}", p.rows);
            if paper {
                prop_assert_eq!((p.r0, p.c0), (crop - p.rows, crop - p.cols), "paper: bottom-right window");
            }
        } else {
            let max_half = ((cfg.local_scale.1 * crop as f64) as usize / 2).max(1);
            prop_assert!(p.rows <= 2 * max_half && p.cols <= 2 * max_half);
        }
        let hi = if paper { 0.5 } else { cfg.offset.1 };
        prop_assert_eq!(p.gamma.len(), channels);
        prop_assert_eq!(p.offset.len(), channels);
        for (&g, &o) in p.gamma.iter().zip(&p.offset) {
            prop_assert!(g as f64 >= cfg.gamma.0 - 1e-6 && g as f64 <= cfg.gamma.1 + 1e-6);
            prop_assert!(o as f64 >= cfg.offset.0 - 1e-6 && o as f64 <= hi + 1e-6);
        }
        let size = ((crop as f64 * out_frac) as usize).max(1);
        let src = values(seed, channels * crop * crop);
        let mut out = vec![f32::NAN; channels * size * size];
        p.render(&src, crop, size, &mut out);
        prop_assert!(out.iter().all(|x| (0.0..=1.0).contains(x)), "rendered values are finite, in [0, 1]");
    }

    /// What the writer is given is what the reader returns: dictionaries, records, crops (with their
    /// checksums), extra metadata, shard split; and the store verifies.
    #[test]
    fn store_round_trip(
        cells in proptest::collection::vec(
            ("[A-Z]{1,3}", "[a-z0-9]{1,3}", 0u32..5, any::<u64>(), -1e4f32..1e4, -1e4f32..1e4, 0usize..4,
             proptest::collection::vec("[a-z0-9]{1,4}", 2)),
            1..24),
        crop in 1u32..7,
        channels in 1usize..4,
        per_shard in 1usize..7,
        meta_cols in 0usize..3,
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..channels).map(|c| format!("ch{c}")).collect();
        let mut o = WriterOptions::new(crop, names.clone());
        o.cells_per_shard = per_shard;
        o.meta_columns = (0..meta_cols).map(|k| format!("m{k}")).collect();
        let genes = ["g0", "g1", "g2", "nontargeting"];
        let metas: Vec<CellMeta> = cells
            .iter()
            .map(|(plate, well, tile, id, i, j, g, extra)| CellMeta {
                plate: plate.clone(),
                well: well.clone(),
                tile: *tile,
                cell_id: *id,
                i: *i,
                j: *j,
                gene: genes[*g].to_string(),
                sgrna: format!("{}_sg", genes[*g]),
                extra: extra[..meta_cols].to_vec(),
            })
            .collect();
        let len = channels * (crop as usize).pow(2);
        let crops = values(seed, metas.len() * len);
        let mut w = StoreWriter::create(dir.path(), o).unwrap();
        let h = metas.len() / 2;
        w.push(&metas[..h], &crops[..h * len]).unwrap();
        w.push(&metas[h..], &crops[h * len..]).unwrap();
        w.finish(serde_json::json!({"seed": seed})).unwrap();

        let s = Store::open(dir.path()).unwrap();
        let m = s.manifest();
        prop_assert_eq!(s.len(), metas.len());
        prop_assert_eq!((s.channels(), s.crop()), (channels, crop as usize));
        prop_assert_eq!(&m.channels, &names);
        prop_assert_eq!(m.shards.len(), metas.len().div_ceil(per_shard));
        let mut batches = BTreeMap::new();
        for (k, c) in metas.iter().enumerate() {
            let r = s.record(k);
            prop_assert_eq!(&m.plates[r.plate as usize], &c.plate);
            prop_assert_eq!(&m.wells[r.well as usize], &c.well);
            prop_assert_eq!(&m.genes[r.gene as usize], &c.gene);
            prop_assert_eq!(&m.sgrnas[r.sgrna as usize], &c.sgrna);
            prop_assert_eq!((r.tile, r.cell_id), (c.tile, c.cell_id));
            prop_assert_eq!((r.i.to_bits(), r.j.to_bits()), (c.i.to_bits(), c.j.to_bits()));
            prop_assert_eq!(r.is_ntc(), c.gene == "nontargeting");
            prop_assert_eq!(m.batch_name(r.batch), format!("{}_{}", c.plate, c.well));
            // One batch id per (plate, well).
            prop_assert_eq!(*batches.entry((&c.plate, &c.well)).or_insert(r.batch), r.batch);
            prop_assert_eq!(s.crop_u16(k).unwrap(), &crops[k * len..(k + 1) * len]);
        }
        prop_assert_eq!(batches.len(), m.batches.len());
        let rows = s.read_meta().unwrap();
        if meta_cols == 0 {
            prop_assert!(rows.is_empty());
        } else {
            let want: Vec<Vec<String>> = metas.iter().map(|c| c.extra.clone()).collect();
            prop_assert_eq!(rows, want);
        }
        prop_assert_eq!(s.report().unwrap()["seed"].as_u64(), Some(seed));
        let v = setdino::store::verify(dir.path()).unwrap();
        prop_assert_eq!(v.cells, metas.len() as u64);
    }
}
