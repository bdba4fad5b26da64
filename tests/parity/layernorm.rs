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
