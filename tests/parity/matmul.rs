use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run_shape<B: Backend>(be: &B, r: usize, i: usize, o: usize, bias: bool) -> Outs {
    // Parameters live at offsets inside a larger flat buffer, as in the engine.
    let (w_off, b_off) = (7, 7 + o * i + 3);
    let np = b_off + o + 5;
    let params = up(be, &data(np, 10 + r as u64, 0.5));
    let x = up(be, &data(r * i, 11, 1.0));
    let dy = up(be, &data(r * o, 12, 1.0));
    let mut y = be.zeros(r * o).unwrap();
    be.matmul_forward(&mut y, &x, &params, w_off, bias.then_some(b_off), r, i, o)
        .unwrap();
    let mut dx = be.zeros(r * i).unwrap();
    let mut dp = up(be, &data(np, 13, 0.1)); // nonzero: parameter grads accumulate
    be.matmul_backward(
        Some(&mut dx),
        &mut dp,
        w_off,
        bias.then_some(b_off),
        &dy,
        &x,
        &params,
        w_off,
        r,
        i,
        o,
    )
    .unwrap();
    vec![
        ("out".into(), dl(be, &y)),
        ("dinp".into(), dl(be, &dx)),
        ("dparams".into(), dl(be, &dp)),
    ]
}

fn run<B: Backend>(be: &B) -> Outs {
    let mut outs = Vec::new();
    for &(r, i, o, bias) in &[
        (185, 20, 36, true),
        (37, 64, 17, true),
        (10, 1, 3, false),
        (74, 33, 96, true),
        (33, 17, 16, true), // R = 2·16 + 1: a last tile of one row
    ] {
        for (n, v) in run_shape(be, r, i, o, bias) {
            outs.push((format!("{n}[{r}x{i}x{o}]"), v));
        }
    }
    outs
}

pub fn run_all() {
    parity!("matmul", run);
}

#[test]
fn matmul_matches_cpu() {
    run_all();
}

// ---- bf16 tensor-core GEMMs (`matmul_*_bf16`) against the CPU twin that rounds at the same points.

/// Awkward shapes for the bf16 path: rows off the 128-row tile, I and O off the 8-element padding
/// (10, 37 columns), K = 48 (one and a half 32-wide k-tiles), and an aligned case.
const BF16_SHAPES: &[(usize, usize, usize, bool)] = &[
    (185, 48, 36, true),
    (37, 64, 10, true),
    (10, 37, 48, false),
    (300, 96, 72, true),
    (129, 16, 200, true),
];

fn run_bf16<B: Backend>(be: &B) -> Outs {
    assert_eq!(be.precision(), setdino::backend::Precision::Bf16);
    let mut outs = Vec::new();
    for &(r, i, o, bias) in BF16_SHAPES {
        for (n, v) in run_shape(be, r, i, o, bias) {
            outs.push((format!("{n}[{r}x{i}x{o}]"), v));
        }
    }
    outs
}

pub fn run_all_bf16() {
    crate::check_bf16("matmul bf16", run_bf16, run_bf16);
}

#[test]
fn matmul_bf16_matches_the_rounding_twin() {
    run_all_bf16();
}

/// The bf16 result is a bf16 result: far from the f32 product on these inputs (so the twin's rounding
/// is what the kernels are held to, and a kernel that skipped the rounding would fail above).
#[test]
fn bf16_twin_differs_from_f32_by_bf16_rounding() {
    use setdino::backend::cpu::CpuBackend;
    let f = run_shape(&CpuBackend::<f32>::new(), 185, 48, 36, true);
    let h = run_shape(
        &CpuBackend::<f32>::with_precision(setdino::backend::Precision::Bf16),
        185,
        48,
        36,
        true,
    );
    let (a, b) = (&f[0].1, &h[0].1);
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let scale = a.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    assert!(
        max > 1e-4 * scale && max < 3e-2 * scale,
        "bf16 vs f32 forward: max diff {max}, scale {scale}"
    );
}

/// The emulator's counters on tile-aligned shapes: one mma per 4096 FLOPs, no ldmatrix bank conflicts,
/// every 32-byte sector a cp.async touches fully used.
#[test]
fn bf16_gemm_counters_on_aligned_shapes() {
    use setdino::backend::gpu::simt::Simt;
    use setdino::backend::gpu::{GpuBackend, Kernel};
    let (r, i, o) = (256usize, 64usize, 128usize);
    let be = GpuBackend::with_precision(Simt::recording(), setdino::backend::Precision::Bf16);
    run_shape(&be, r, i, o, true);
    let launches = be.dev.take_launches();
    let flops = (2 * r * i * o) as u64;
    for k in [
        Kernel::matmul_forward_bf16,
        Kernel::matmul_backward_input_bf16,
        Kernel::matmul_backward_weight_bf16,
    ] {
        let l: Vec<_> = launches.iter().filter(|l| l.kernel == k).collect();
        assert_eq!(l.len(), 1, "{k:?} launched once");
        let c = l[0].counters;
        eprintln!("{k:?} grid {:?}: {c:?}", l[0].grid);
        assert_eq!(c.mma, flops / 4096, "{k:?}: mma count = FLOPs / 4096");
        assert!(c.ldmatrix_phases > 0, "{k:?} uses ldmatrix");
        assert_eq!(c.ldmatrix_replays, 0, "{k:?}: ldmatrix bank conflicts");
        // A and B, each element once per CTA that needs it, 2 bytes per bf16.
        assert!(c.cp_async_bytes > 0, "{k:?} uses cp.async");
        assert_eq!(
            c.cp_async_bytes,
            32 * c.cp_async_sectors,
            "{k:?}: sectors fully used"
        );
    }
    // Forward: each of the (R/BM)·(O/64) CTAs reads its BM rows of inp and 64 rows of W, all of K.
    let fwd = launches
        .iter()
        .find(|l| l.kernel == Kernel::matmul_forward_bf16)
        .map(|l| l.counters)
        .expect("forward launch");
    let bm = setdino::backend::gpu::launch::gemm_tile_rows(r, o);
    assert_eq!(bm, 64, "a 2×2-tile GEMM gets the small tile");
    let ctas = (r / bm * (o / 64)) as u64;
    assert_eq!(fwd.cp_async_bytes, ctas * ((bm + 64) * i * 2) as u64);
}

/// The fused bias + GELU epilogue (`matmul_forward_gelu_bf16`) equals the GEMM followed by the GELU
/// kernel bit for bit on the device, and matches the CPU twin (the same composition) within tolerance.
#[test]
fn fused_gelu_epilogue_equals_gemm_then_gelu() {
    use setdino::backend::cpu::CpuBackend;
    use setdino::backend::gpu::simt::Simt;
    use setdino::backend::gpu::GpuBackend;
    use setdino::backend::Precision;
    fn fused<B: Backend>(be: &B, r: usize, i: usize, o: usize) -> (Vec<f32>, Vec<f32>) {
        let params = up(be, &data(o * i + o, 77, 0.5));
        let x = up(be, &data(r * i, 78, 1.0));
        let (mut pre, mut act) = (be.zeros(r * o).unwrap(), be.zeros(r * o).unwrap());
        be.matmul_forward_gelu(&mut pre, &mut act, &x, &params, 0, o * i, r, i, o)
            .unwrap();
        (dl(be, &pre), dl(be, &act))
    }
    fn unfused<B: Backend>(be: &B, r: usize, i: usize, o: usize) -> (Vec<f32>, Vec<f32>) {
        let params = up(be, &data(o * i + o, 77, 0.5));
        let x = up(be, &data(r * i, 78, 1.0));
        let (mut pre, mut act) = (be.zeros(r * o).unwrap(), be.zeros(r * o).unwrap());
        be.matmul_forward(&mut pre, &x, &params, 0, Some(o * i), r, i, o)
            .unwrap();
        be.gelu_forward(&mut act, &pre, r * o).unwrap();
        (dl(be, &pre), dl(be, &act))
    }
    for &(r, i, o) in &[(185, 48, 36), (37, 96, 200)] {
        let g = GpuBackend::with_precision(Simt::new(), Precision::Bf16);
        let (pf, af) = fused(&g, r, i, o);
        let (pu, au) = unfused(&g, r, i, o);
        assert_eq!(pf, pu, "pre-activation, {r}x{i}x{o}");
        assert_eq!(af, au, "activation, {r}x{i}x{o}");
        let c = CpuBackend::<f32>::with_precision(Precision::Bf16);
        let (pc, ac) = fused(&c, r, i, o);
        crate::compare(
            "fused gelu",
            &vec![("pre".into(), pf), ("act".into(), af)],
            &vec![("pre".into(), pc), ("act".into(), ac)],
        );
    }
}

/// The residual epilogue (`matmul_forward_residual_bf16`: out = resid + scale[row / N]·(x·Wᵀ + b))
/// against its twin, on row counts that are not a multiple of the tile, K not a multiple of 8 (padded
/// operands) and one dropped sample; and the f32 backends' composition against each other.
fn run_residual<B: Backend>(be: &B) -> Outs {
    let mut outs = Vec::new();
    for &(r, i, o, n) in &[
        (74usize, 48usize, 40usize, 37usize),
        (20, 37, 70, 10),
        (130, 96, 64, 65),
    ] {
        let params = up(be, &data(o * i + o, 90, 0.5));
        let x = up(be, &data(r * i, 91, 1.0));
        let resid = up(be, &data(r * o, 92, 2.0));
        let sc: Vec<f32> = (0..r / n)
            .map(|s| if s == 1 { 0.0 } else { 1.25 })
            .collect();
        let sc = up(be, &sc);
        let mut out = be.zeros(r * o).unwrap();
        be.matmul_forward_residual(&mut out, &x, &params, 0, o * i, &resid, &sc, r, i, o, n)
            .unwrap();
        outs.push((format!("out[{r}x{i}x{o}]"), dl(be, &out)));
    }
    outs
}

#[test]
fn residual_epilogue_matches_cpu() {
    parity!("matmul residual", run_residual);
    crate::check_bf16("matmul residual bf16", run_residual, run_residual);
}

/// The twin of the fused kernel is the rounding GEMM followed by the residual add, element for element.
#[test]
fn residual_twin_is_gemm_then_residual() {
    use setdino::backend::cpu::matmul as twin;
    use setdino::backend::cpu::residual::residual_forward;
    let (r, i, o, n) = (20usize, 37usize, 70usize, 10usize);
    let w = data(o * i + o, 90, 0.5);
    let x = data(r * i, 91, 1.0);
    let resid = data(r * o, 92, 2.0);
    let sc = vec![1.25f32, 0.0];
    let mut fused = vec![0f32; r * o];
    twin::matmul_forward_residual_bf16(
        &mut fused,
        &x,
        &w[..o * i],
        &w[o * i..],
        &resid,
        &sc,
        r,
        i,
        o,
        n,
    );
    let mut branch = vec![0f32; r * o];
    twin::matmul_forward_bf16(&mut branch, &x, &w[..o * i], Some(&w[o * i..]), r, i, o);
    let mut two = vec![0f32; r * o];
    residual_forward(&mut two, &resid, &branch, &sc, r / n, n * o);
    assert_eq!(fused, two);
    // the dropped sample (scale 0) is the residual itself
    assert_eq!(&fused[n * o..], &resid[n * o..]);
}

/// With a bf16 activation buffer (`zeros_act`), the fused GELU epilogue writes the activation in bf16:
/// it equals round_bf16 of the f32 activation, and the pre-activation is unchanged.
#[test]
fn gelu_epilogue_writes_a_bf16_activation() {
    use setdino::backend::gpu::{simt::Simt, GpuBackend};
    use setdino::backend::{DType, Precision};
    let g = GpuBackend::with_precision(Simt::new(), Precision::Bf16);
    for &(r, i, o) in &[(185usize, 48usize, 40usize), (37, 96, 200)] {
        let params = up(&g, &data(o * i + o, 77, 0.5));
        let x = up(&g, &data(r * i, 78, 1.0));
        let (mut pre, mut act) = (g.zeros(r * o).unwrap(), g.zeros(r * o).unwrap());
        g.matmul_forward_gelu(&mut pre, &mut act, &x, &params, 0, o * i, r, i, o)
            .unwrap();
        let (mut pre16, mut act16) = (g.zeros(r * o).unwrap(), g.zeros_act(r, o).unwrap());
        assert_eq!(g.dtype(&act16), DType::Bf16);
        g.matmul_forward_gelu(&mut pre16, &mut act16, &x, &params, 0, o * i, r, i, o)
            .unwrap();
        assert_eq!(dl(&g, &pre16), dl(&g, &pre), "pre-activation {r}x{i}x{o}");
        let want: Vec<f32> = dl(&g, &act)
            .into_iter()
            .map(setdino::backend::cpu::matmul::round_bf16)
            .collect();
        assert_eq!(dl(&g, &act16), want, "bf16 activation {r}x{i}x{o}");
    }
}

/// The tile rule: 128-row tiles once their grid fills a wave of 264 CTAs (the ViT-S GEMMs over ~38 k
/// token rows), 64-row tiles for small GEMMs (the head over a few hundred set rows); and the counters
/// of the 128-row tile on an aligned shape, fixed by `set_gemm_tile`.
#[test]
fn gemm_tile_per_shape_and_its_counters() {
    use setdino::backend::gpu::launch::gemm_tile_rows;
    use setdino::backend::gpu::simt::Simt;
    use setdino::backend::gpu::{GpuBackend, Kernel};
    assert_eq!(gemm_tile_rows(38_000, 384), 128);
    assert_eq!(gemm_tile_rows(38_000, 1536), 128);
    assert_eq!(gemm_tile_rows(256, 2048), 64);
    assert_eq!(
        gemm_tile_rows(4224, 512),
        128,
        "33·8 = 264 CTAs: exactly one wave"
    );
    assert_eq!(gemm_tile_rows(4096, 512), 64);
    let (r, i, o) = (256usize, 64usize, 128usize);
    let mut be = GpuBackend::with_precision(Simt::recording(), setdino::backend::Precision::Bf16);
    be.set_gemm_tile(Some(128)).unwrap();
    assert!(be.set_gemm_tile(Some(100)).is_err());
    run_shape(&be, r, i, o, true);
    let fwd = be
        .dev
        .take_launches()
        .into_iter()
        .find(|l| l.kernel == Kernel::matmul_forward_bf16)
        .expect("forward launch");
    assert_eq!(fwd.block[0], 256);
    let c = fwd.counters;
    assert_eq!(c.mma, (2 * r * i * o) as u64 / 4096);
    assert_eq!(c.ldmatrix_replays, 0);
    assert_eq!(c.cp_async_bytes, 32 * c.cp_async_sectors);
    assert_eq!(
        c.cp_async_bytes,
        (r / 128 * (o / 64) * (128 + 64) * i * 2) as u64
    );
}
