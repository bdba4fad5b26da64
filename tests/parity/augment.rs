//! Device augmentation: `augment.cu` against its CPU twin on random parameters, and the twin against the
//! data path's own renderer (`data::augment::CropParams::render`) on the parameters the data path draws,
//! so CPU and GPU augmentations agree for the same (seed, step, set, cell, crop) keys.
use crate::{data, dl, parity, up, Outs};
use setdino::backend::cpu::CpuBackend;
use setdino::backend::Backend;
use setdino::data::augment::{crop_params, AugmentCompat, AugmentConfig, CropParams};

const C: usize = 3;
const CROP: usize = 24;

/// Parameter record of `augment_render_f32` for `p` reading source cell `cell` (the data path's).
pub fn record(p: &CropParams, cell: usize) -> Vec<f32> {
    let mut r = Vec::new();
    setdino::data::device_step::render_record(p, cell, &mut r);
    r
}

fn src_u16(cells: usize) -> Vec<u16> {
    data(cells * C * CROP * CROP, 130, 1.0)
        .iter()
        .map(|v| ((v + 1.0) * 0.5 * 65535.0) as u16)
        .collect()
}

fn drawn(compat: AugmentCompat) -> Vec<(CropParams, usize, usize)> {
    let mut cfg = AugmentConfig::for_crop(CROP);
    cfg.compat = compat;
    cfg.seed = 7;
    let mut v = Vec::new();
    for k in 0..6 {
        // 2 global views and 4 local views of cell k % 4.
        for ci in 0..6u64 {
            let size = if ci < 2 { CROP } else { CROP / 2 };
            v.push((crop_params(&cfg, CROP, C, 3, k / 2, k % 2, ci), k % 4, size));
        }
    }
    v
}

fn run<B: Backend>(be: &B) -> Outs {
    let raw = src_u16(4);
    let src: Vec<f32> = raw.iter().map(|&x| x as f32).collect();
    let s = up(be, &src);
    // the same crops as stored (u16: packed two per word on the device, `augment_render_u16_f32`), with
    // an odd number of values so the last word is half used
    let odd = &raw[..raw.len() - 1];
    let s16 = be.upload_u16(odd).unwrap();
    assert_eq!(
        dl(be, &s16),
        odd.iter().map(|&x| f32::from(x)).collect::<Vec<_>>()
    );
    let mut outs = Vec::new();
    for compat in [AugmentCompat::Fixed, AugmentCompat::Paper] {
        for size in [CROP, CROP / 2] {
            let ps: Vec<_> = drawn(compat)
                .into_iter()
                .filter(|(_, _, sz)| *sz == size)
                .collect();
            let n = ps.len();
            let params: Vec<f32> = ps
                .iter()
                .flat_map(|(p, cell, _)| record(p, *cell))
                .collect();
            let pb = up(be, &params);
            let mut out = be.zeros(n * C * size * size).unwrap();
            be.augment_render(&mut out, &s, &pb, n, C, CROP, size)
                .unwrap();
            outs.push((format!("render[{compat:?},{size}]"), dl(be, &out)));
            // cells 0..2 only: the odd-length u16 source holds 3 whole cells
            let few: Vec<(usize, usize)> = ps
                .iter()
                .enumerate()
                .filter(|(_, (_, cell, _))| *cell < 3)
                .map(|(k, (_, cell, _))| (k, *cell))
                .collect();
            let fp: Vec<f32> = few
                .iter()
                .flat_map(|&(k, cell)| record(&ps[k].0, cell))
                .collect();
            let mut o16 = be.zeros(few.len() * C * size * size).unwrap();
            be.augment_render(&mut o16, &s16, &up(be, &fp), few.len(), C, CROP, size)
                .unwrap();
            let want: Vec<f32> = few
                .iter()
                .flat_map(|&(k, _)| {
                    dl(be, &out)[k * C * size * size..(k + 1) * C * size * size].to_vec()
                })
                .collect();
            assert_eq!(dl(be, &o16), want, "u16 source = f32 source");
            outs.push((format!("render_u16[{compat:?},{size}]"), dl(be, &o16)));
            let stats: Vec<f32> = data(2 * n * C, 131, 0.5)
                .iter()
                .map(|x| x.abs() + 0.1)
                .collect();
            let mut x = be.upload(&dl(be, &out)).unwrap();
            be.augment_normalize_ntc(&mut x, &up(be, &stats), n, C, size * size)
                .unwrap();
            outs.push((format!("ntc[{compat:?},{size}]"), dl(be, &x)));
            be.augment_normalize_zscore(&mut out, n, C, size * size)
                .unwrap();
            outs.push((format!("zscore[{compat:?},{size}]"), dl(be, &out)));
        }
    }
    outs
}

#[test]
fn augment_matches_cpu() {
    parity!("augment", run);
}

/// The backend twin reproduces the data path's renderer on the data path's own random parameters
/// (the renderer's fast x^γ is within 1e-6 of powf).
#[test]
fn device_augmentation_equals_the_data_path_renderer() {
    let raw = src_u16(4);
    let be = CpuBackend::<f32>::new();
    let s = be
        .upload(&raw.iter().map(|&x| x as f32).collect::<Vec<_>>())
        .unwrap();
    let mut worst = 0f32;
    for compat in [AugmentCompat::Fixed, AugmentCompat::Paper] {
        for (p, cell, size) in drawn(compat) {
            let mut want = vec![0f32; C * size * size];
            p.render(
                &raw[cell * C * CROP * CROP..(cell + 1) * C * CROP * CROP],
                CROP,
                size,
                &mut want,
            );
            let pb = be.upload(&record(&p, cell)).unwrap();
            let mut got = be.zeros(C * size * size).unwrap();
            be.augment_render(&mut got, &s, &pb, 1, C, CROP, size)
                .unwrap();
            for (a, b) in got.iter().zip(&want) {
                worst = worst.max((a - b).abs());
            }
        }
    }
    eprintln!("device augmentation vs data path: max |Δ| {worst:.2e}");
    assert!(worst <= 5e-6, "max |Δ| {worst}");
}

/// `upload_step_inputs` (the step's raw crops and records in one staged transfer): on simt the buffers
/// hold the given values (odd cell counts included, u16 cells as `upload_u16` keeps them), on the CPU
/// the same values; each call is one upload; buffers still held are never handed to a later call (the two
/// slots alternate, and a slot reuses only dropped memory); the slots' memory stays bounded while the
/// cell count changes from step to step.
#[test]
fn step_inputs_go_up_in_one_transfer_into_alternating_slots() {
    use setdino::backend::cpu::CpuBackend;
    use setdino::backend::gpu::{simt::Simt, GpuBackend};
    let g = GpuBackend::new(Simt::new());
    let cpu = CpuBackend::<f32>::new();
    let call = |be_cells: usize, k: u16| -> (Vec<u16>, Vec<f32>, Vec<f32>) {
        let cells: Vec<u16> = (0..be_cells as u16)
            .map(|i| i.wrapping_mul(7) ^ k)
            .collect();
        let p: Vec<f32> = (0..13u16)
            .map(|i| f32::from(i) * 0.5 + f32::from(k))
            .collect();
        (cells, p, Vec::new())
    };
    let mut held = Vec::new();
    for (step, n) in [5usize, 8, 5, 11, 3, 5, 5, 5].into_iter().enumerate() {
        let (cells, p, empty) = call(n, step as u16);
        let before = g.counts().unwrap();
        let (c, parts) = g.upload_step_inputs(&cells, &[&p, &empty]).unwrap();
        let d = g.counts().unwrap().since(before);
        assert_eq!(d.uploads, 1, "one transfer per call");
        let as_f32 = |v: &[u16]| v.iter().map(|&x| f32::from(x)).collect::<Vec<_>>();
        assert_eq!(g.download(&c).unwrap(), as_f32(&cells));
        assert_eq!(g.download(&parts[0]).unwrap(), p);
        assert_eq!(g.buf_len(&parts[1]), 0);
        let (cc, cp) = cpu.upload_step_inputs(&cells, &[&p, &empty]).unwrap();
        assert_eq!((cc.to_vec(), cp[0].to_vec()), (as_f32(&cells), p.clone()));
        // keep every other call's buffers: later calls must not overwrite them
        if step % 2 == 0 {
            held.push((c, as_f32(&cells), parts, p));
        }
    }
    for (c, cells, parts, p) in &held {
        assert_eq!(
            &g.download(c).unwrap(),
            cells,
            "a held input buffer was reused"
        );
        assert_eq!(&g.download(&parts[0]).unwrap(), p);
    }
    drop(held);
    // steady sizes after varying ones: the slots keep one set each, so memory does not grow
    let alloc = |g: &GpuBackend<Simt>| g.counts().unwrap().alloc_bytes;
    for k in 0..4 {
        let (cells, p, e) = call(5, k);
        drop(g.upload_step_inputs(&cells, &[&p, &e]).unwrap());
    }
    let steady = alloc(&g);
    for k in 0..6 {
        let (cells, p, e) = call(5, k);
        drop(g.upload_step_inputs(&cells, &[&p, &e]).unwrap());
    }
    assert_eq!(alloc(&g), steady, "no allocation once the sizes repeat");
}
