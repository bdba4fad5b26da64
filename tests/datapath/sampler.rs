//! Sampler: filtering, set invariants for each strategy, determinism and exact resume, epoch coverage.
use crate::common::*;
use setdino::data::{GroupBy, Sampler, SamplerConfig, Strategy};
use setdino::store::{CellFilter, Store};
use std::collections::{BTreeMap, HashSet};

fn cfg(strategy: Strategy) -> SamplerConfig {
    SamplerConfig {
        strategy,
        set_size: 8,
        sets_per_step: 5,
        min_cells: Some(20),
        seed: 7,
        ..Default::default()
    }
}

fn check_invariants(store: &Store, s: &Sampler, steps: std::ops::Range<u64>) {
    let strategy = s.config().strategy;
    for t in steps {
        let draws = s.sample_step(t);
        assert_eq!(draws.len(), 5);
        for d in &draws {
            for v in 0..2 {
                assert_eq!(d.cells[v].len(), 8);
                let uniq: HashSet<u32> = d.cells[v].iter().copied().collect();
                assert_eq!(uniq.len(), 8, "no cell twice in a set view (step {t})");
                for &k in &d.cells[v] {
                    let r = store.record(k as usize);
                    let p = match s.config().group_by {
                        GroupBy::Gene => r.gene,
                        GroupBy::Sgrna => r.sgrna,
                    };
                    assert_eq!(p, d.pert, "one perturbation per set");
                    assert_eq!(r.batch, d.batches[v], "view {v} cells come from its batch");
                }
            }
            match strategy {
                Strategy::CrossBatch => {
                    assert_ne!(d.batches[0], d.batches[1], "two distinct wells")
                }
                Strategy::WithinBatch => assert_eq!(d.batches[0], d.batches[1]),
                Strategy::SameCells => assert_eq!(d.cells[0], d.cells[1]),
            }
        }
    }
}

#[test]
fn filtering_follows_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let store = screen_store(dir.path(), 8, 2, 2, 4, 24);
    let s = Sampler::new(&store, cfg(Strategy::CrossBatch)).unwrap();
    let m = store.manifest();
    let names: Vec<&str> = s
        .perts()
        .iter()
        .map(|p| m.genes[p.id as usize].as_str())
        .collect();
    // "rare" (one batch) and "thin" (3 cells per batch) are filtered out; NTC is an ordinary perturbation.
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(
        names.contains(&"nontargeting") && !names.contains(&"rare") && !names.contains(&"thin")
    );
    assert!(s
        .perts()
        .iter()
        .all(|p| p.groups.len() == 4 && p.groups.iter().all(|g| g.1.len() == 24)));
    // By sgRNA: 12 cells per (guide, batch) < 20, so nothing survives unless min_cells allows it.
    let by_guide = SamplerConfig {
        group_by: GroupBy::Sgrna,
        ..cfg(Strategy::CrossBatch)
    };
    assert!(Sampler::new(&store, by_guide.clone()).is_err());
    let s = Sampler::new(
        &store,
        SamplerConfig {
            min_cells: Some(12),
            ..by_guide
        },
    )
    .unwrap();
    assert_eq!(s.perts().len(), 10);
    // Default min cells = max(n, 20); min_cells below n is refused.
    assert!(Sampler::new(
        &store,
        SamplerConfig {
            min_cells: Some(4),
            ..cfg(Strategy::CrossBatch)
        }
    )
    .is_err());
    // A split: one plate only.
    let f = CellFilter {
        plates: Some(vec!["P1".into()]),
        ..Default::default()
    };
    let s = Sampler::new(
        &store,
        SamplerConfig {
            filter: f,
            ..cfg(Strategy::CrossBatch)
        },
    )
    .unwrap();
    assert!(s.perts().iter().all(|p| p
        .groups
        .iter()
        .all(|(b, _)| m.batches[*b as usize].plate == 1)));
}

#[test]
fn set_invariants_for_every_strategy() {
    let dir = tempfile::tempdir().unwrap();
    let store = screen_store(dir.path(), 8, 2, 2, 4, 24);
    for st in [
        Strategy::CrossBatch,
        Strategy::WithinBatch,
        Strategy::SameCells,
    ] {
        let s = Sampler::new(&store, cfg(st)).unwrap();
        check_invariants(&store, &s, 0..3 * s.steps_per_epoch());
    }
    let s = Sampler::new(
        &store,
        SamplerConfig {
            group_by: GroupBy::Sgrna,
            min_cells: Some(12),
            ..cfg(Strategy::CrossBatch)
        },
    )
    .unwrap();
    check_invariants(&store, &s, 0..40);
}

#[test]
fn deterministic_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let store = screen_store(dir.path(), 8, 2, 2, 4, 24);
    let a = Sampler::new(&store, cfg(Strategy::CrossBatch)).unwrap();
    let spe = a.steps_per_epoch();
    let seq: Vec<_> = (0..3 * spe).map(|t| a.sample_step(t)).collect();
    // A fresh sampler asked for steps out of order (as after a resume) gives the same sets.
    let b = Sampler::new(&store, cfg(Strategy::CrossBatch)).unwrap();
    for t in [2 * spe + 3, 5, spe, 0, 3 * spe - 1] {
        assert_eq!(b.sample_step(t), seq[t as usize], "step {t}");
    }
    // A different seed differs.
    let c = Sampler::new(
        &store,
        SamplerConfig {
            seed: 8,
            ..cfg(Strategy::CrossBatch)
        },
    )
    .unwrap();
    assert_ne!(c.sample_step(0), seq[0]);
    // Each epoch visits every perturbation exactly `repeats` times (the reference's 2·4·10 = 80 at n = 8).
    for e in 0..2 {
        let mut count: BTreeMap<u32, usize> = BTreeMap::new();
        for t in e * spe..(e + 1) * spe {
            for d in a.sample_step(t) {
                *count.entry(d.pert).or_default() += 1;
            }
        }
        assert_eq!(spe, 5 * 80 / 5);
        assert!(count.values().all(|&c| c == 80), "{count:?}");
    }
}
