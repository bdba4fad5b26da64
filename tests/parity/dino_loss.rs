use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let mut outs = Vec::new();
    for &(v, s, k, tt) in &[(4, 3, 37, 0.04), (2, 5, 300, 0.01), (10, 2, 65, 0.07)] {
        // Logits as the head makes them: cosines in [-1, 1].
        let z = up(be, &data(v * s * k, 90 + k as u64, 1.0));
        let t = up(be, &data(2 * s * k, 91, 1.0));
        let center = up(be, &data(k, 92, 0.2));
        // the temperature read from device memory, at an offset of a scalar buffer
        let mut tb = be.zeros(4).unwrap();
        be.upload_scalars(&mut tb, 3, &[tt]).unwrap();
        let tt = (&tb, 3);
        let mut loss = be.zeros(1).unwrap();
        let mut dz = be.zeros(v * s * k).unwrap();
        let mut q = be.zeros(2 * s * k).unwrap();
        be.dino_loss_forward_backward(
            &mut loss,
            &mut dz,
            &mut q,
            &z,
            &t,
            Some(&center),
            v,
            s,
            k,
            0.1,
            tt,
        )
        .unwrap();
        // Sinkhorn–Knopp targets, then the loss on them (no center).
        let mut qs = be.zeros(2 * s * k).unwrap();
        be.dino_loss_sinkhorn(&mut qs, &t, 2 * s, k, tt, 3).unwrap();
        let mut loss_s = be.zeros(1).unwrap();
        let mut dz_s = be.zeros(v * s * k).unwrap();
        be.dino_loss_forward_backward(
            &mut loss_s,
            &mut dz_s,
            &mut qs,
            &z,
            &t,
            None,
            v,
            s,
            k,
            0.1,
            tt,
        )
        .unwrap();
        outs.push((format!("sinkhorn tprobs[V={v},K={k}]"), dl(be, &qs)));
        outs.push((format!("sinkhorn loss[V={v},K={k}]"), dl(be, &loss_s)));
        outs.push((format!("sinkhorn dstudent[V={v},K={k}]"), dl(be, &dz_s)));
        let mut c2 = up(be, &data(k, 93, 0.2));
        be.dino_loss_center_update(&mut c2, &t, 2 * s, k, 0.9)
            .unwrap();
        outs.push((format!("loss[V={v},K={k}]"), dl(be, &loss)));
        outs.push((format!("dstudent[V={v},K={k}]"), dl(be, &dz)));
        outs.push((format!("tprobs[V={v},K={k}]"), dl(be, &q)));
        outs.push((format!("center[V={v},K={k}]"), dl(be, &c2)));
        // Monitoring values into slots 1 and 2 of 3 (slot 0 and the rest stay as filled): the centered
        // targets of distinct rows, then the Sinkhorn targets of a collapsed teacher (one row repeated).
        let mut stats = up(be, &[-7.0; 12]);
        be.dino_loss_monitor(&mut stats, &loss, &q, &t, 1, 2 * s, 2 * s, k)
            .unwrap();
        let same = up(be, &data(k, 94, 1.0).repeat(2 * s));
        be.dino_loss_monitor(&mut stats, &loss_s, &qs, &same, 2, 2 * s, 2 * s, k)
            .unwrap();
        outs.push((format!("monitor[V={v},K={k}]"), dl(be, &stats)));
    }
    outs
}

pub fn run_all() {
    parity!("dino_loss", run);
}

#[test]
fn dino_loss_matches_cpu() {
    run_all();
}
