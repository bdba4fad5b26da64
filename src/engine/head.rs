//! The DINO projection head, written once over `Backend`: MLP (Linear → GELU → … → Linear to the
//! bottleneck) → L2 normalisation (eps 1e-12) → weight-normalised last layer W = g·V/‖V‖ (no bias).
//! The set mean that precedes it lives in the step (it is the first op of the reference's head).
use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::model::params::{head_dims, head_mlp_name, ParamLayout, LAST_G, LAST_V};
use anyhow::Result;

/// L2-normalisation epsilon of `F.normalize`.
pub const L2_EPS: f64 = 1e-12;

/// Offsets of the head tensors.
#[derive(Clone, Debug)]
pub struct HeadOffs {
    /// (w_off, b_off, in, out) per MLP layer.
    pub mlp: Vec<(usize, usize, usize, usize)>,
    pub last_v: usize,
    pub last_g: usize,
}

impl HeadOffs {
    pub fn new(cfg: &ModelConfig, layout: &ParamLayout) -> Self {
        let mlp = head_dims(cfg)
            .into_iter()
            .enumerate()
            .map(|(j, (i, o))| {
                (
                    layout.off(&head_mlp_name(j, "weight")),
                    layout.off(&head_mlp_name(j, "bias")),
                    i,
                    o,
                )
            })
            .collect();
        HeadOffs {
            mlp,
            last_v: layout.off(LAST_V),
            last_g: layout.off(LAST_G),
        }
    }
}

/// Activations of one head forward over R rows.
pub struct HeadActs<B: Backend> {
    pub r: usize,
    /// Inputs of each MLP layer: ins[0] is the head input (R, C); ins[j] the GELU output of layer j−1.
    pub ins: Vec<B::Buf>,
    /// Pre-activation outputs of the MLP layers except the last.
    pub pre: Vec<B::Buf>,
    /// Bottleneck output (R, Cb), its L2-normalised version and row norms.
    pub z: B::Buf,
    pub y: B::Buf,
    pub ynorm: B::Buf,
    /// Effective last-layer weight (K, Cb) and the row norms of V.
    pub w: B::Buf,
    pub wnorm: B::Buf,
    /// Head output (R, K), before any temperature.
    pub logits: B::Buf,
}

/// Forward of the head on `inp` (R, C) with parameters `params`.
pub fn head_forward<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    offs: &HeadOffs,
    params: &B::Buf,
    inp: B::Buf,
    r: usize,
) -> Result<HeadActs<B>> {
    let nl = offs.mlp.len();
    let mut ins = vec![inp];
    let mut pre = Vec::new();
    let mut z = None;
    for (j, &(w_off, b_off, i, o)) in offs.mlp.iter().enumerate() {
        let mut out = be.uninit(r * o)?; // the GEMM writes it whole
        if j + 1 < nl {
            let mut act = be.uninit_act(r, o)?; // read only by the next GEMM
            be.matmul_forward_gelu(&mut out, &mut act, &ins[j], params, w_off, b_off, r, i, o)?;
            pre.push(out);
            ins.push(act);
        } else {
            be.matmul_forward(&mut out, &ins[j], params, w_off, Some(b_off), r, i, o)?;
            z = Some(out);
        }
    }
    let z = z.expect("head has at least one layer");
    let cb = cfg.head_bottleneck;
    let k = cfg.out_dim;
    // outputs written whole by their ops
    let mut y = be.uninit(r * cb)?;
    let mut ynorm = be.uninit(r)?;
    be.l2norm_forward(&mut y, &mut ynorm, &z, r, cb, L2_EPS)?;
    let mut w = be.uninit(k * cb)?;
    let mut wnorm = be.uninit(k)?;
    be.weightnorm_forward(&mut w, &mut wnorm, params, offs.last_v, offs.last_g, k, cb)?;
    let mut logits = be.uninit(r * k)?;
    // f32 at every precision: the loss divides these logits by the temperatures (Backend doc)
    be.matmul_forward_full(&mut logits, &y, &w, 0, None, r, cb, k)?;
    Ok(HeadActs {
        r,
        ins,
        pre,
        z,
        y,
        ynorm,
        w,
        wnorm,
        logits,
    })
}

/// Backward of the head: `dlogits` (R, K) → gradient of the head input (R, C); parameter gradients
/// accumulate into `grads` (+=).
pub fn head_backward<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    offs: &HeadOffs,
    params: &B::Buf,
    grads: &mut B::Buf,
    acts: &HeadActs<B>,
    dlogits: &B::Buf,
) -> Result<B::Buf> {
    let r = acts.r;
    let cb = cfg.head_bottleneck;
    let k = cfg.out_dim;
    let mut dy = be.uninit(r * cb)?; // the data gradient (=)
    let mut dw = be.zeros(k * cb)?; // the weight gradient accumulates (+=)
    be.matmul_backward_full(
        Some(&mut dy),
        &mut dw,
        0,
        None,
        dlogits,
        &acts.y,
        &acts.w,
        0,
        r,
        cb,
        k,
    )?;
    be.weightnorm_backward(
        grads,
        offs.last_v,
        &dw,
        params,
        offs.last_g,
        &acts.wnorm,
        k,
        cb,
    )?;
    let mut dcur = be.uninit(r * cb)?; // (=)
    be.l2norm_backward(&mut dcur, &dy, &acts.y, &acts.ynorm, r, cb, L2_EPS)?;
    for j in (0..offs.mlp.len()).rev() {
        let (w_off, b_off, i, o) = offs.mlp[j];
        let mut dinp = be.uninit(r * i)?; // (=)
        be.matmul_backward(
            Some(&mut dinp),
            grads,
            w_off,
            Some(b_off),
            &dcur,
            &acts.ins[j],
            params,
            w_off,
            r,
            i,
            o,
        )?;
        if j > 0 {
            let mut dpre = be.uninit(r * i)?; // (=)
            be.gelu_backward(&mut dpre, &dinp, &acts.pre[j - 1], r * i)?;
            dcur = dpre;
        } else {
            dcur = dinp;
        }
    }
    Ok(dcur)
}
