use crate::common::{check_grad, dot, rand_vec};
use setdino::backend::cpu::attention::*;

#[test]
fn attention_backward_matches_finite_differences() {
    for &(b, n, nh, hs) in &[(2, 5, 2, 3), (1, 10, 3, 4)] {
        let c = nh * hs;
        let qkv = rand_vec(b * n * 3 * c, 21 + n as u64, 1.5);
        let up = rand_vec(b * n * c, 22, 1.0);
        let fwd = |q: &[f64]| {
            let mut out = vec![0.0; b * n * c];
            let mut att = vec![0.0; b * nh * n * n];
            attention_forward(&mut out, &mut att, q, b, n, nh, hs);
            dot(&up, &out)
        };
        let mut out = vec![0.0; b * n * c];
        let mut att = vec![0.0; b * nh * n * n];
        attention_forward(&mut out, &mut att, &qkv, b, n, nh, hs);
        for row in att.chunks(n) {
            let s: f64 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-12, "softmax rows sum to 1");
        }
        let mut dqkv = vec![0.0; b * n * 3 * c];
        let mut datt = vec![0.0; b * nh * n * n];
        attention_backward(&mut dqkv, &mut datt, &up, &qkv, &att, b, n, nh, hs);
        check_grad(
            &format!("attention dqkv N={n}"),
            &qkv,
            &dqkv,
            fwd,
            400,
            crate::TOL,
        );
    }
}
