use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

/// Two groups of 6 rows of 37 features: a row parallel to one of the other group (not its neighbour),
/// two coinciding rows (distance 0, the clamped coefficient; a tie for every other row of their group,
/// broken towards the lower index), and dinp starting non-zero (the op adds).
fn run<B: Backend>(be: &B) -> Outs {
    let (g, r, c) = (2, 6, 37);
    let mut xv = data(g * r * c, 80, 1.0);
    let twin: Vec<f32> = xv[2 * c..3 * c].iter().map(|v| 2.0 * v).collect();
    xv[7 * c..8 * c].copy_from_slice(&twin); // row 7 (group 1) ∥ row 2 (group 0): not neighbours
    let dup: Vec<f32> = xv[9 * c..10 * c].to_vec();
    xv[11 * c..12 * c].copy_from_slice(&dup); // rows 9 and 11 coincide: distance 0
    let x = up(be, &xv);
    let mut y = be.zeros(g * r * c).unwrap();
    let mut nrm = be.zeros(g * r).unwrap();
    be.l2norm_forward(&mut y, &mut nrm, &x, g * r, c, 1e-8)
        .unwrap();
    let mut nn = be.zeros(g * r).unwrap();
    let mut dist = be.zeros(g * r).unwrap();
    be.koleo_forward(&mut nn, &mut dist, &y, g, r, c).unwrap();
    let mut dx = up(be, &data(g * r * c, 81, 1.0));
    let mut loss = be.zeros(1).unwrap();
    be.koleo_backward(&mut dx, &mut loss, &nn, &dist, &y, &nrm, g, r, c, 0.1, 1e-3)
        .unwrap();
    vec![
        ("nn".into(), dl(be, &nn)),
        ("dist".into(), dl(be, &dist)),
        ("loss".into(), dl(be, &loss)),
        ("dinp".into(), dl(be, &dx)),
    ]
}

#[test]
fn koleo_matches_cpu() {
    parity!("koleo", run);
}
