use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let n = 3000;
    let mut g = data(n, 100, 1.0);
    // Tensor 2 is tiny (not clipped); the others are clipped at 3.0.
    for v in g[1000..1300].iter_mut() {
        *v *= 1e-3;
    }
    let mut gb = up(be, &g);
    let ranges = [(0usize, 1000usize), (1000, 300), (1300, 1), (1301, 1699)];
    be.reduce_clip_per_tensor(&mut gb, &ranges, 3.0).unwrap();
    let mut f = up(be, &data(1000, 101, 1.0));
    be.fill(&mut f, 17, 600, 0.25).unwrap();
    vec![("clip".into(), dl(be, &gb)), ("fill".into(), dl(be, &f))]
}

pub fn run_all() {
    parity!("reduce", run);
}

#[test]
fn reduce_matches_cpu() {
    run_all();
}
