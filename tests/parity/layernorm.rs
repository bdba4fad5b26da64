use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let mut outs = Vec::new();
    for &(r, c) in &[(111, 20), (10, 70), (5, 384)] {
        let (w_off, b_off) = (3, 3 + c + 2);
        let np = b_off + c + 1;
        let mut pv = data(np, 20, 0.3);
        for v in pv[w_off..w_off + c].iter_mut() {
            *v += 1.0;
        }
        let params = up(be, &pv);
        let x = up(be, &data(r * c, 21, 2.0));
        let dy = up(be, &data(r * c, 22, 1.0));
        let mut y = be.zeros(r * c).unwrap();
        let mut mean = be.zeros(r).unwrap();
        let mut rstd = be.zeros(r).unwrap();
        be.layernorm_forward(
            &mut y, &mut mean, &mut rstd, &x, &params, w_off, b_off, r, c, 1e-6,
        )
        .unwrap();
        let mut dx = up(be, &data(r * c, 23, 0.5)); // residual stream: +=
        let mut dp = up(be, &data(np, 24, 0.1));
        be.layernorm_backward(
            &mut dx, &mut dp, w_off, b_off, &dy, &x, &params, w_off, &mean, &rstd, r, c,
        )
        .unwrap();
        outs.push((format!("out[{r}x{c}]"), dl(be, &y)));
        outs.push((format!("mean[{r}x{c}]"), dl(be, &mean)));
        outs.push((format!("rstd[{r}x{c}]"), dl(be, &rstd)));
        outs.push((format!("dinp[{r}x{c}]"), dl(be, &dx)));
        outs.push((format!("dparams[{r}x{c}]"), dl(be, &dp)));
    }
    outs
}

#[test]
fn layernorm_matches_cpu() {
    run_all();
}

pub fn run_all() {
    parity!("layernorm", run);
}

/// Shapes (R, C, N) of the fused residual LayerNorm: R rows in samples of N tokens.
const RESIDUAL_SHAPES: [(usize, usize, usize); 3] = [(74, 24, 37), (30, 20, 10), (5, 384, 5)];

struct LnInputs {
    params: Vec<f32>,
    x: Vec<f32>,
    branch: Vec<f32>,
    scale: Vec<f32>,
    w_off: usize,
    b_off: usize,
}

fn ln_inputs(r: usize, c: usize, n: usize) -> LnInputs {
    let (w_off, b_off) = (5, 5 + c + 3);
    let mut params = data(b_off + c + 2, 30, 0.3);
    for v in params[w_off..w_off + c].iter_mut() {
        *v += 1.0;
    }
    // drop-path scales: kept samples 1/keep, dropped ones 0
    let scale = (0..r / n)
        .map(|s| if s % 3 == 1 { 0.0 } else { 1.25 })
        .collect();
    LnInputs {
        params,
        x: data(r * c, 31, 2.0),
        branch: data(r * c, 32, 1.0),
        scale,
        w_off,
        b_off,
    }
}

/// `layernorm_forward_residual` (x = inp + scale·branch, then LayerNorm) on both backends; on a bf16
/// backend the LayerNorm output comes from `zeros_act` (stored in bf16 where C % 8 == 0).
fn run_residual<B: Backend>(be: &B) -> Outs {
    let mut outs = Vec::new();
    for &(r, c, n) in &RESIDUAL_SHAPES {
        let t = ln_inputs(r, c, n);
        let (params, x, br, sc) = (
            up(be, &t.params),
            up(be, &t.x),
            up(be, &t.branch),
            up(be, &t.scale),
        );
        let mut xo = be.zeros(r * c).unwrap();
        let mut y = be.zeros_act(r, c).unwrap();
        let mut mean = be.zeros(r).unwrap();
        let mut rstd = be.zeros(r).unwrap();
        be.layernorm_forward_residual(
            &mut xo, &mut y, &mut mean, &mut rstd, &x, &br, &sc, &params, t.w_off, t.b_off, r, c,
            n, 1e-6,
        )
        .unwrap();
        outs.push((format!("x[{r}x{c}]"), dl(be, &xo)));
        outs.push((format!("out[{r}x{c}]"), dl(be, &y)));
        outs.push((format!("mean[{r}x{c}]"), dl(be, &mean)));
        outs.push((format!("rstd[{r}x{c}]"), dl(be, &rstd)));
    }
    outs
}

#[test]
fn fused_residual_layernorm_matches_cpu() {
    parity!("layernorm residual", run_residual);
}

/// The fused kernel on the CPU equals the unfused schedule (residual_forward, then layernorm_forward)
/// bit for bit: the fusion changes no arithmetic.
#[test]
fn fused_residual_layernorm_equals_residual_then_layernorm_on_the_cpu() {
    let be = setdino::backend::cpu::CpuBackend::<f32>::new();
    for &(r, c, n) in &RESIDUAL_SHAPES {
        let t = ln_inputs(r, c, n);
        let (tx, branch, scale, params) = (
            be.upload(&t.x).unwrap(),
            be.upload(&t.branch).unwrap(),
            be.upload(&t.scale).unwrap(),
            be.upload(&t.params).unwrap(),
        );
        let mut out: Vec<_> = [r * c, r * c, r, r]
            .iter()
            .map(|&n| be.zeros(n).unwrap())
            .collect();
        let [x, y, mean, rstd] = &mut out[..] else {
            unreachable!()
        };
        be.layernorm_forward_residual(
            x, y, mean, rstd, &tx, &branch, &scale, &params, t.w_off, t.b_off, r, c, n, 1e-6,
        )
        .unwrap();
        let fused: Vec<Vec<f32>> = out.iter().map(|b| be.download(b).unwrap()).collect();
        let mut x = be.zeros(r * c).unwrap();
        be.residual_forward(&mut x, &tx, &branch, &scale, r / n, n * c)
            .unwrap();
        let (mut y, mut mean, mut rstd) = (
            be.zeros(r * c).unwrap(),
            be.zeros(r).unwrap(),
            be.zeros(r).unwrap(),
        );
        be.layernorm_forward(
            &mut y, &mut mean, &mut rstd, &x, &params, t.w_off, t.b_off, r, c, 1e-6,
        )
        .unwrap();
        let unfused: Vec<Vec<f32>> = [&x, &y, &mean, &rstd]
            .iter()
            .map(|b| be.download(b).unwrap())
            .collect();
        assert_eq!(fused, unfused, "{r}x{c}");
    }
}

/// On a bf16 device the LayerNorm outputs are bf16 buffers (`layernorm_forward_bf16`,
/// `layernorm_forward_residual_bf16`) and equal the twins that round the output; where C % 8 != 0
/// the output stays f32 and equals the f32 twin.
#[test]
fn bf16_layernorm_outputs_match_the_rounding_twins() {
    use setdino::backend::cpu::layernorm as twin;
    use setdino::backend::gpu::{simt::Simt, GpuBackend};
    use setdino::backend::{DType, Precision};
    let g = GpuBackend::with_precision(Simt::new(), Precision::Bf16);
    for &(r, c, n) in &RESIDUAL_SHAPES {
        let t = ln_inputs(r, c, n);
        let (w, b) = (
            &t.params[t.w_off..t.w_off + c],
            &t.params[t.b_off..t.b_off + c],
        );
        let want_dtype = if c % 8 == 0 { DType::Bf16 } else { DType::F32 };
        // plain LayerNorm
        let (mut y, mut mean, mut rstd) = (vec![0f32; r * c], vec![0f32; r], vec![0f32; r]);
        if want_dtype == DType::Bf16 {
            twin::layernorm_forward_bf16(&mut y, &mut mean, &mut rstd, &t.x, w, b, r, c, 1e-6);
        } else {
            twin::layernorm_forward(&mut y, &mut mean, &mut rstd, &t.x, w, b, r, c, 1e-6);
        }
        let params = up(&g, &t.params);
        let x = up(&g, &t.x);
        let mut gy = g.zeros_act(r, c).unwrap();
        assert_eq!(g.dtype(&gy), want_dtype, "zeros_act({r}, {c})");
        let (mut gm, mut gr) = (g.zeros(r).unwrap(), g.zeros(r).unwrap());
        g.layernorm_forward(
            &mut gy, &mut gm, &mut gr, &x, &params, t.w_off, t.b_off, r, c, 1e-6,
        )
        .unwrap();
        check_out("layernorm bf16 out", want_dtype, &dl(&g, &gy), &y);
        crate::compare(
            "layernorm bf16",
            &vec![("mean".into(), dl(&g, &gm))],
            &vec![("mean".into(), mean)],
        );
        // residual + LayerNorm
        let (mut xo, mut y, mut mean, mut rstd) = (
            vec![0f32; r * c],
            vec![0f32; r * c],
            vec![0f32; r],
            vec![0f32; r],
        );
        let f = if want_dtype == DType::Bf16 {
            twin::layernorm_forward_residual_bf16::<f32>
        } else {
            twin::layernorm_forward_residual::<f32>
        };
        f(
            &mut xo, &mut y, &mut mean, &mut rstd, &t.x, &t.branch, &t.scale, w, b, r, c, n, 1e-6,
        );
        let (br, sc) = (up(&g, &t.branch), up(&g, &t.scale));
        let mut gx = g.zeros(r * c).unwrap();
        let mut gy = g.zeros_act(r, c).unwrap();
        g.layernorm_forward_residual(
            &mut gx, &mut gy, &mut gm, &mut gr, &x, &br, &sc, &params, t.w_off, t.b_off, r, c, n,
            1e-6,
        )
        .unwrap();
        check_out("layernorm residual bf16 out", want_dtype, &dl(&g, &gy), &y);
        crate::compare(
            "layernorm residual bf16",
            &vec![("x".into(), dl(&g, &gx)), ("rstd".into(), dl(&g, &gr))],
            &vec![("x".into(), xo), ("rstd".into(), rstd)],
        );
    }
}

/// A bf16 output against its rounding twin; an f32 one (the fallback) within the f32 tolerance.
pub fn check_out(op: &str, dtype: setdino::backend::DType, got: &[f32], want: &[f32]) {
    match dtype {
        setdino::backend::DType::Bf16 => crate::compare_rounded(op, got, want),
        setdino::backend::DType::F32 | setdino::backend::DType::U16 => crate::compare(
            op,
            &vec![("out".into(), got.to_vec())],
            &vec![("out".into(), want.to_vec())],
        ),
    }
}
