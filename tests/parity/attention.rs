use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let mut outs = Vec::new();
    for &(b, n, nh, hs) in &[(2, 5, 2, 3), (3, 10, 3, 8), (1, 37, 6, 4)] {
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
