use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let mut outs = Vec::new();
    for &(b, n, nh, hs) in &[(2, 5, 2, 3), (3, 10, 3, 8), (1, 37, 6, 4), (1, 70, 1, 16)] {
        let c = nh * hs;
        let qkv = up(be, &data(b * n * 3 * c, 30 + n as u64, 1.5));
        let dy = up(be, &data(b * n * c, 31, 1.0));
        let mut out = be.zeros(b * n * c).unwrap();
        let mut att = be.zeros(b * nh * n * n).unwrap();
        be.attention_forward(&mut out, &mut att, &qkv, b, n, nh, hs)
            .unwrap();
        let mut dqkv = be.zeros(b * n * 3 * c).unwrap();
        let mut datt = be.zeros(b * nh * n * n).unwrap();
        be.attention_backward(&mut dqkv, &mut datt, &dy, &qkv, &att, b, n, nh, hs)
            .unwrap();
        outs.push((format!("out[N={n}]"), dl(be, &out)));
        outs.push((format!("att[N={n}]"), dl(be, &att)));
        outs.push((format!("dqkv[N={n}]"), dl(be, &dqkv)));
    }
    outs
}

#[test]
fn attention_matches_cpu() {
    parity!("attention", run);
}

// ---- bf16 tensor-core attention against the twin that rounds q, k, v, dout, P and dS where it does.
fn run_bf16<B: Backend>(be: &B) -> Outs {
    let mut outs = Vec::new();
    // (B, N, NH, HS): the ViT-S shapes (37 and 10 tokens, HS 64), N = 1, 17, 64, head sizes off 16.
    for &(b, n, nh, hs) in &[
        (2, 37, 2, 64),
        (3, 10, 3, 12),
        (1, 64, 1, 48),
        (2, 1, 2, 16),
        (1, 17, 2, 8),
        (1, 70, 1, 16), // beyond 64 tokens: the f32 attention on both sides (Precision::bf16_attention)
    ] {
        let c = nh * hs;
        let qkv = up(be, &data(b * n * 3 * c, 40 + n as u64, 1.5));
        let dy = up(be, &data(b * n * c, 41, 1.0));
        let mut out = be.zeros(b * n * c).unwrap();
        let mut att = be.zeros(b * nh * n * n).unwrap();
        be.attention_forward(&mut out, &mut att, &qkv, b, n, nh, hs)
            .unwrap();
        let mut dqkv = up(be, &data(b * n * 3 * c, 42, 9.0)); // (=): overwritten everywhere
        let mut datt = be.zeros(b * nh * n * n).unwrap();
        be.attention_backward(&mut dqkv, &mut datt, &dy, &qkv, &att, b, n, nh, hs)
            .unwrap();
        let lse = dl(be, &att)[..b * nh * n].to_vec();
        let tag = format!("[{b}x{n}x{nh}x{hs}]");
        outs.push((format!("out{tag}"), dl(be, &out)));
        outs.push((format!("lse{tag}"), lse));
        outs.push((format!("dqkv{tag}"), dl(be, &dqkv)));
    }
    outs
}

pub fn run_all_bf16() {
    crate::check_bf16("attention bf16", run_bf16, run_bf16);
}

#[test]
fn attention_bf16_matches_the_rounding_twin() {
    run_all_bf16();
}

/// The bf16 path is a bf16 path: its output differs from the f32 kernels' by bf16 rounding, not more.
#[test]
fn attention_bf16_differs_from_f32_by_rounding_only() {
    use setdino::backend::cpu::CpuBackend;
    use setdino::backend::Precision;
    let f = run_bf16(&CpuBackend::<f32>::new());
    let h = run_bf16(&CpuBackend::<f32>::with_precision(Precision::Bf16));
    let (a, b) = (&f[0].1, &h[0].1); // out[2x37x2x64]
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let scale = a.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    assert!(
        max > 1e-4 * scale && max < 3e-2 * scale,
        "max diff {max}, scale {scale}"
    );
}
