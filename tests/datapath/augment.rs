//! Augmentation and normalisation: the D4 group, crop bounds, value ranges, set-major layout, the paper
//! quirks, normalisers, and bit-identical tensors for any thread count.
use crate::common::*;
use setdino::data::augment::{crop_params, CropParams, D4};
use setdino::data::rng::stream;
use setdino::data::{
    make_step, AugmentCompat, AugmentConfig, NormKind, Normalizer, Sampler, SamplerConfig,
};
use setdino::store::Store;
use std::collections::HashSet;

/// The 8 D4 images of a (C, w, w) crop, as f32 in [0, 1].
fn d4_images(src: &[u16], c: usize, w: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for code in 0..8 {
        let d = D4 {
            flip_ud: code & 1 != 0,
            flip_lr: code & 2 != 0,
            rot90: code & 4 != 0,
        };
        let mut img = vec![0f32; c * w * w];
        for ch in 0..c {
            for i in 0..w {
                for j in 0..w {
                    let (a, b) = d.src(i, j, w);
                    img[ch * w * w + i * w + j] = src[ch * w * w + a * w + b] as f32 / 65535.0;
                }
            }
        }
        out.push(img);
    }
    out
}

fn identity_photometric(crop: usize) -> AugmentConfig {
    AugmentConfig {
        zoom: (1.0, 1.0),
        gamma: (1.0, 1.0),
        offset: (0.0, 0.0),
        ..AugmentConfig::for_crop(crop)
    }
}

fn setup(dir: &std::path::Path) -> (Store, Sampler) {
    let store = screen_store(dir, 16, 2, 2, 3, 20);
    let cfg = SamplerConfig {
        set_size: 4,
        sets_per_step: 3,
        min_cells: Some(20),
        seed: 1,
        ..Default::default()
    };
    let s = Sampler::new(&store, cfg).unwrap();
    (store, s)
}

#[test]
fn d4_rot90_matches_numpy_and_the_group_is_covered() {
    // np.rot90(a, k=1, axes=(1, 2)) of [[0, 1], [2, 3]] is [[1, 3], [0, 2]].
    let r = D4 {
        flip_ud: false,
        flip_lr: false,
        rot90: true,
    };
    let a = [[0, 1], [2, 3]];
    let got: Vec<i32> = (0..2)
        .flat_map(|i| (0..2).map(move |j| (i, j)))
        .map(|(i, j)| {
            let (x, y) = r.src(i, j, 2);
            a[x][y]
        })
        .collect();
    assert_eq!(got, vec![1, 3, 0, 2]);
    let src = crop_values(0, 2, 16);
    let images = d4_images(&src, 2, 16);
    assert_eq!(
        images
            .iter()
            .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            .collect::<HashSet<_>>()
            .len(),
        8
    );
    let cfg = identity_photometric(16);
    let mut seen = HashSet::new();
    let mut out = vec![0f32; 2 * 256];
    for k in 0..200 {
        let p = CropParams::draw_global(&mut stream(3, 9, &[k]), &cfg, 16, 2);
        p.render(&src, 16, 16, &mut out);
        let which = images
            .iter()
            .position(|im| *im == out)
            .expect("a zoom-free global view is a D4 image of the crop");
        seen.insert(which);
    }
    assert_eq!(seen.len(), 8, "all 8 elements of D4 occur");
}

#[test]
fn crop_bounds_and_value_ranges() {
    for compat in [AugmentCompat::Fixed, AugmentCompat::Paper] {
        let cfg = AugmentConfig {
            compat,
            ..AugmentConfig::for_crop(96)
        };
        let (mut zoom_offsets, mut offs) = (HashSet::new(), Vec::new());
        for k in 0..2000u64 {
            let g = crop_params(&cfg, 96, 4, k, 0, 0, 0);
            assert!(
                (86..=96).contains(&g.rows) && g.rows == g.cols,
                "side round(96·U(0.9,1)) ∈ [86, 96]"
            );
            assert!(g.r0 + g.rows <= 96 && g.c0 + g.cols <= 96);
            if compat == AugmentCompat::Paper {
                assert_eq!(
                    (g.r0, g.c0),
                    (96 - g.rows, 96 - g.cols),
                    "paper: bottom-right corner"
                );
            }
            zoom_offsets.insert((g.r0, g.c0));
            let l = crop_params(&cfg, 96, 4, k, 0, 0, 5);
            // Centre in [28, 68), half-sides ⌊⌊s·96⌋/2⌋ with s ∈ [0.4, 0.6): sides 38..=56, even.
            for (o, n) in [(l.r0, l.rows), (l.c0, l.cols)] {
                assert!((38..=56).contains(&n) && n % 2 == 0, "local side {n}");
                assert!(
                    (28..68).contains(&(o + n / 2)),
                    "local centre {}",
                    o + n / 2
                );
            }
            for p in [&g, &l] {
                assert!(p.gamma.iter().all(|x| (0.5..1.5).contains(x)));
                offs.extend(p.offset.iter().copied());
            }
        }
        let max = offs.iter().cloned().fold(f32::MIN, f32::max);
        let min = offs.iter().cloned().fold(f32::MAX, f32::min);
        assert!((-0.3..-0.29).contains(&min));
        match compat {
            AugmentCompat::Fixed => {
                assert!(max <= 0.3 && max > 0.29);
                assert!(zoom_offsets.len() > 20, "fixed zoom: the window moves");
            }
            AugmentCompat::Paper => assert!(max > 0.49 && max <= 0.5, "paper: offset up to +0.5"),
        }
    }
    // Un-normalised outputs stay in [0, 1].
    let dir = tempfile::tempdir().unwrap();
    let (store, s) = setup(dir.path());
    let norm = Normalizer::new(NormKind::None, &store);
    let t = make_step(
        &store,
        &s.sample_step(0),
        &AugmentConfig::for_crop(16),
        &norm,
        0,
    )
    .unwrap();
    assert!(t
        .global
        .iter()
        .chain(&t.local)
        .all(|x| (0.0..=1.0).contains(x)));
    assert!(t.global.iter().any(|&x| x == 0.0 || x == 1.0) || t.global.iter().any(|&x| x > 0.5));
}

#[test]
fn layout_is_set_major_and_locals_follow_their_view() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s) = setup(dir.path());
    let draws = s.sample_step(4);
    let cfg = identity_photometric(16);
    let norm = Normalizer::new(NormKind::None, &store);
    let t = make_step(&store, &draws, &cfg, &norm, 4).unwrap();
    let (r, c, g, l) = (t.rows(), 2, 16, 8);
    assert_eq!((t.sets, t.set_size, r), (3, 4, 12));
    assert_eq!(t.global.len(), 2 * r * c * g * g);
    assert_eq!(t.local.len(), 8 * r * c * l * l);
    for v in 0..2 {
        for row in 0..r {
            let cell = draws[row / 4].cells[v][row % 4] as usize;
            let imgs = d4_images(store.crop_u16(cell).unwrap(), c, g);
            let got = &t.global[(v * r + row) * c * g * g..][..c * g * g];
            assert!(
                imgs.iter().any(|im| im == got),
                "global view {v}, row {row} is cell {cell}"
            );
        }
    }
    for li in 0..8 {
        for row in 0..r {
            let cell = draws[row / 4].cells[li / 4][row % 4] as usize;
            let src = store.crop_u16(cell).unwrap();
            for ch in 0..c {
                let vals: HashSet<u32> = src[ch * 256..(ch + 1) * 256]
                    .iter()
                    .map(|&x| (x as f32 / 65535.0).to_bits())
                    .collect();
                let got = &t.local[((li * r + row) * c + ch) * l * l..][..l * l];
                assert!(
                    got.iter().all(|x| vals.contains(&x.to_bits())),
                    "local {li} row {row} comes from cell {cell}"
                );
            }
        }
    }
}

#[test]
fn deterministic_across_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s) = setup(dir.path());
    let cfg = AugmentConfig {
        seed: 11,
        ..AugmentConfig::for_crop(16)
    };
    let norm = Normalizer::new(
        NormKind::Ntc {
            compat_2sigma: false,
        },
        &store,
    );
    let run = |threads: usize, step: u64| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| make_step(&store, &s.sample_step(step), &cfg, &norm, step).unwrap())
    };
    let a = run(1, 3);
    let b = run(4, 3);
    assert!(a
        .global
        .iter()
        .zip(&b.global)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(a
        .local
        .iter()
        .zip(&b.local)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(a, run(2, 3));
    assert_ne!(a, run(1, 4), "another step gives other tensors");
    let other = AugmentConfig {
        seed: 12,
        ..cfg.clone()
    };
    assert_ne!(
        a.global,
        make_step(&store, &s.sample_step(3), &other, &norm, 3)
            .unwrap()
            .global
    );
}

#[test]
fn normalisers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(dir.path());
    let mut img = vec![0f32; store.crop_len()];
    store.crop_f32(5, &mut img).unwrap();
    let orig = img.clone();
    Normalizer::new(NormKind::Zscore, &store)
        .apply(0, &mut img, 2)
        .unwrap();
    for ch in img.chunks(256) {
        let m = ch.iter().map(|&x| x as f64).sum::<f64>() / 256.0;
        let sd = (ch.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / 256.0).sqrt();
        assert!(m.abs() < 1e-5 && (sd - 1.0).abs() < 1e-4, "{m} {sd}");
    }
    let b = store.record(5).batch;
    let st = store.batch_stats(b).unwrap().channels.clone();
    for (kind, f) in [
        (
            NormKind::Ntc {
                compat_2sigma: false,
            },
            1.0,
        ),
        (
            NormKind::Ntc {
                compat_2sigma: true,
            },
            2.0,
        ),
    ] {
        let mut x = orig.clone();
        Normalizer::new(kind, &store).apply(b, &mut x, 2).unwrap();
        for (p, v) in x.iter().enumerate() {
            let cs = &st[p / 256];
            let want = (orig[p] as f64 - cs.mean) / (f * cs.std + 1e-6);
            assert!(
                (*v as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
                "{v} {want}"
            );
        }
    }
}

#[test]
fn fast_pow_matches_powf() {
    use setdino::data::fastpow::{log2_table, pow_unorm};
    let t = log2_table();
    let mut worst = 0f32;
    for v in (0..65536u32).step_by(7).chain([1, 2, 65535]) {
        for g in [0.5f32, 0.5001, 0.73, 1.0, 1.2345, 1.4999] {
            let want = (v as f32 / 65535.0).powf(g);
            worst = worst.max((pow_unorm(t, v as u16, g) - want).abs());
        }
    }
    assert!(worst < 1e-6, "max |fast − powf| = {worst}");
}

#[test]
fn pipeline_and_prefetch_give_the_same_steps() {
    use setdino::data::Pipeline;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(dir.path());
    let cfg = SamplerConfig {
        set_size: 4,
        sets_per_step: 3,
        min_cells: Some(20),
        seed: 1,
        ..Default::default()
    };
    let aug = AugmentConfig {
        seed: 5,
        ..AugmentConfig::for_crop(16)
    };
    let direct: Vec<_> = (7..12)
        .map(|t| {
            make_step(
                &store,
                &Sampler::new(&store, cfg.clone()).unwrap().sample_step(t),
                &aug,
                &Normalizer::new(NormKind::Zscore, &store),
                t,
            )
            .unwrap()
        })
        .collect();
    let p = Arc::new(Pipeline::new(Arc::new(store), cfg, aug, NormKind::Zscore).unwrap());
    assert_eq!(p.step(9).unwrap(), direct[2]);
    let mut pf = p.clone().prefetch(7, 2);
    for (k, want) in direct.iter().enumerate() {
        let (t, got) = pf.next().unwrap();
        assert_eq!(t, 7 + k as u64);
        let got = got.unwrap();
        assert_eq!(&got, want, "prefetched step {t}");
        pf.recycle(got);
    }
    drop(pf); // the producer stops
}

/// Augmentation on the device (`data::device_step`): from the distinct cells' stored crops (each once)
/// and the parameters the data path draws, `augment.cu` renders and normalises the same crops as the CPU
/// data path, for every normaliser, on the CPU twin and on the emulated device.
#[test]
fn crops_rendered_on_the_device_equal_the_data_path_crops() {
    use setdino::backend::cpu::CpuBackend;
    use setdino::backend::gpu::{simt::Simt, GpuBackend};
    use setdino::backend::Backend;
    use setdino::data::device_step::{render_on, RawStep};
    use setdino::data::Pipeline;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(dir.path());
    let store = Arc::new(store);
    let cfg = SamplerConfig {
        set_size: 4,
        sets_per_step: 3,
        min_cells: Some(20),
        seed: 1,
        ..Default::default()
    };
    let aug = AugmentConfig {
        seed: 5,
        ..AugmentConfig::for_crop(16)
    };
    fn worst<B: Backend>(be: &B, raw: &RawStep, want: &[f32], local: &[f32]) -> f32 {
        let b = render_on(be, raw).unwrap();
        let mut w = 0f32;
        let got_l = b.local.as_ref().map(|l| be.download(l).unwrap());
        for (got, want) in [
            (Some(be.download(&b.global).unwrap()), want),
            (got_l, local),
        ] {
            let got = got.unwrap_or_default();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(want) {
                w = w.max((a - b).abs() / b.abs().max(1.0));
            }
        }
        w
    }
    // Views at the crop's side, and smaller than it (`data.max_input_size`: 16-px crops seen at 8 px).
    let small = AugmentConfig {
        global_size: 8,
        local_size: 4,
        ..aug.clone()
    };
    for (aug, norm) in [
        (&aug, NormKind::None),
        (&aug, NormKind::Zscore),
        (
            &aug,
            NormKind::Ntc {
                compat_2sigma: false,
            },
        ),
        (
            &small,
            NormKind::Ntc {
                compat_2sigma: false,
            },
        ),
    ] {
        let p = Pipeline::new(store.clone(), cfg.clone(), aug.clone(), norm).unwrap();
        for t in [0, 3] {
            let want = p.step(t).unwrap();
            let mut raw = RawStep::default();
            p.raw_step_into(t, &mut raw).unwrap();
            assert!(aug.n_local > 0 && !want.local.is_empty());
            let rows = want.rows();
            assert_eq!(raw.global_params.len(), 2 * rows * (8 + 2 * want.channels));
            // each distinct cell once: the step's 2R cells (a cell may repeat across sets)
            assert!(raw.cells.len() <= 2 * rows * want.channels * 16 * 16);
            let cpu = worst(&CpuBackend::<f32>::new(), &raw, &want.global, &want.local);
            let simt = worst(
                &GpuBackend::new(Simt::new()),
                &raw,
                &want.global,
                &want.local,
            );
            eprintln!(
                "{norm:?} {} px step {t}: max rel |Δ| cpu {cpu:.1e}, simt {simt:.1e}",
                aug.global_size
            );
            assert!(cpu <= 1e-5 && simt <= 1e-5, "{norm:?}: {cpu} {simt}");
        }
    }
}

#[test]
fn plain_view_is_the_whole_crop_resized_like_a_zoom_one_global_view() {
    use setdino::data::augment::{plain_crop, plain_view};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(dir.path());
    let norm = Normalizer::new(
        NormKind::Ntc {
            compat_2sigma: false,
        },
        &store,
    );
    let (crop, c) = (store.crop(), store.channels());
    for k in [0usize, 7, 33] {
        // At the crop's own side: the plain crop, bit for bit.
        let mut full = vec![0f32; c * crop * crop];
        plain_crop(&store, k, &norm, &mut full).unwrap();
        let mut same = vec![0f32; c * crop * crop];
        plain_view(&store, k, &norm, crop, &mut same).unwrap();
        assert_eq!(full, same);
        // Smaller and larger: nearest resize of the whole normalised crop, cv2.INTER_NEAREST's
        // src = min(⌊dst · (1 / (size / crop))⌋, crop − 1) in f64 (what training's global views use),
        // computed here independently.
        for size in [8usize, 12, 24] {
            let mut got = vec![0f32; c * size * size];
            plain_view(&store, k, &norm, size, &mut got).unwrap();
            let scale = 1.0 / (size as f64 / crop as f64);
            let src = |d: usize| ((d as f64 * scale).floor() as usize).min(crop - 1);
            for ch in 0..c {
                for i in 0..size {
                    for j in 0..size {
                        let want = full[ch * crop * crop + src(i) * crop + src(j)];
                        let v = got[ch * size * size + i * size + j];
                        assert!(
                            (v - want).abs() <= 1e-6 * want.abs().max(1.0),
                            "{size}: {v} {want}"
                        );
                    }
                }
            }
        }
    }
}
