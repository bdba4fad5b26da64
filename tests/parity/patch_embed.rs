use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;
use setdino::model::pos::interp_matrix;

fn run<B: Backend>(be: &B) -> Outs {
    let (b, ch, side, p) = (2, 3, 24, 8);
    let img = up(be, &data(b * ch * side * side, 40, 1.0));
    let np = b * (side / p) * (side / p);
    let mut cols = be.zeros(np * ch * p * p).unwrap();
    be.patch_embed_im2col(&mut cols, &img, b, ch, side, side, p)
        .unwrap();
    let mut outs = vec![("im2col".to_string(), dl(be, &cols))];
    for &(bb, o, g, c) in &[(3, 3, 28, 20), (2, 2, 5, 7), (1, 6, 6, 5)] {
        let (pp, g2) = (o * o, g * g);
        let interp = up(
            be,
            &interp_matrix(g, o)
                .iter()
                .map(|&x| x as f32)
                .collect::<Vec<_>>(),
        );
        let (cls_off, pos_off) = (5, 5 + c + 3);
        let npar = pos_off + (1 + g2) * c + 2;
        let params = up(be, &data(npar, 41, 1.0));
        let patch = up(be, &data(bb * pp * c, 42, 1.0));
        let mut x = be.zeros(bb * (1 + pp) * c).unwrap();
        be.patch_embed_tokens_forward(
            &mut x, &patch, &params, cls_off, pos_off, &interp, bb, pp, g2, c,
        )
        .unwrap();
        let dx = up(be, &data(bb * (1 + pp) * c, 43, 1.0));
        let mut dp = up(be, &data(npar, 44, 0.1));
        let mut dpatch = be.zeros(bb * pp * c).unwrap();
        be.patch_embed_tokens_backward(
            &mut dp,
            cls_off,
            pos_off,
            &mut dpatch,
            &dx,
            &interp,
            bb,
            pp,
            g2,
            c,
        )
        .unwrap();
        outs.push((format!("x[g={g},o={o}]"), dl(be, &x)));
        outs.push((format!("dparams[g={g},o={o}]"), dl(be, &dp)));
        outs.push((format!("dpatch[g={g},o={o}]"), dl(be, &dpatch)));
    }
    outs
}

#[test]
fn patch_embed_matches_cpu() {
    parity!("patch_embed", run);
}
