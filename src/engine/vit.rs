//! The ViT backbone schedule, written once over `Backend` (llm.c's `gpt2_forward`/`gpt2_backward`):
//! patch embedding → CLS + interpolated positions → L pre-norm blocks (LN → attention → residual with
//! drop path; LN → GELU MLP → residual with drop path) → final LayerNorm on the CLS rows.
//!
//! Only the CLS rows leave the backbone (its output and the embedding read nothing else), so the last
//! block's MLP branch runs on the B CLS rows alone: after its attention and projection, which still need
//! every token, the rest of the network is dead code for the other B·(N−1) rows. That is 2/3 of the
//! last block's GEMM work (fc1 and fc2): 1/6 of a 4-block tiny model's, 1/18 of ViT-S's, forward and
//! backward, with the same results for every output.
use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::model::params::{BlockNames, ParamLayout, CLS, NORM_B, NORM_W, PATCH_B, PATCH_W, POS};
use anyhow::{ensure, Result};

/// Offsets of one block's tensors in the flat buffer.
#[derive(Clone, Copy, Debug)]
pub struct BlockOffs {
    pub norm1_w: usize,
    pub norm1_b: usize,
    pub qkv_w: usize,
    pub qkv_b: usize,
    pub proj_w: usize,
    pub proj_b: usize,
    pub norm2_w: usize,
    pub norm2_b: usize,
    pub fc1_w: usize,
    pub fc1_b: usize,
    pub fc2_w: usize,
    pub fc2_b: usize,
}

/// Offsets of the backbone tensors, resolved once from the table (no string lookups in the hot loop).
#[derive(Clone, Debug)]
pub struct BackboneOffs {
    pub patch_w: usize,
    pub patch_b: usize,
    pub cls: usize,
    pub pos: usize,
    pub norm_w: usize,
    pub norm_b: usize,
    pub blocks: Vec<BlockOffs>,
}

impl BackboneOffs {
    pub fn new(cfg: &ModelConfig, layout: &ParamLayout) -> Self {
        let blocks = (0..cfg.depth)
            .map(|i| {
                let n = BlockNames::new(i);
                BlockOffs {
                    norm1_w: layout.off(&n.norm1_w),
                    norm1_b: layout.off(&n.norm1_b),
                    qkv_w: layout.off(&n.qkv_w),
                    qkv_b: layout.off(&n.qkv_b),
                    proj_w: layout.off(&n.proj_w),
                    proj_b: layout.off(&n.proj_b),
                    norm2_w: layout.off(&n.norm2_w),
                    norm2_b: layout.off(&n.norm2_b),
                    fc1_w: layout.off(&n.fc1_w),
                    fc1_b: layout.off(&n.fc1_b),
                    fc2_w: layout.off(&n.fc2_w),
                    fc2_b: layout.off(&n.fc2_b),
                }
            })
            .collect();
        BackboneOffs {
            patch_w: layout.off(PATCH_W),
            patch_b: layout.off(PATCH_B),
            cls: layout.off(CLS),
            pos: layout.off(POS),
            norm_w: layout.off(NORM_W),
            norm_b: layout.off(NORM_B),
            blocks,
        }
    }
}

/// Activations of one block, kept for the backward. `ln1`, `attn_o`, `ln2` and `gelu` are read only by
/// GEMMs and come from `Backend::zeros_act` (bf16 on a bf16 GPU backend).
pub struct BlockActs<B: Backend> {
    /// LN1 output, mean, rstd: (B, N, C), (B·N), (B·N).
    pub ln1: B::Buf,
    pub ln1_mean: B::Buf,
    pub ln1_rstd: B::Buf,
    /// (B, N, 3C)
    pub qkv: B::Buf,
    /// (B, NH, N, N)
    pub att: B::Buf,
    /// Attention output before the projection: (B, N, C).
    pub attn_o: B::Buf,
    pub ln2: B::Buf,
    pub ln2_mean: B::Buf,
    pub ln2_rstd: B::Buf,
    /// fc1 output (pre-GELU) and GELU output: (B, N, F).
    pub fc1: B::Buf,
    pub gelu: B::Buf,
    /// Drop-path scales of the two residual branches: (B).
    pub scale1: B::Buf,
    pub scale2: B::Buf,
}

/// Activations of one forward group (B images of one resolution).
pub struct GroupActs<B: Backend> {
    pub b: usize,
    pub side: usize,
    /// Tokens N and patches P.
    pub n: usize,
    pub p: usize,
    /// im2col patches: (B·P, CH·p·p).
    pub patches: B::Buf,
    /// Residual stream: xs[2l] enters block l, xs[2l+1] is after its attention branch; xs[2L] is the
    /// output of the last block. Each (B, N, C), except the last block's two (xs[2L−1], xs[2L]), which
    /// hold only the CLS rows (B, C); so do its `ln2`, `fc1` and `gelu` (B rows).
    pub xs: Vec<B::Buf>,
    pub blocks: Vec<BlockActs<B>>,
    /// CLS rows of the last block (B, C), their final LN output (B, C), mean, rstd (B).
    pub cls: B::Buf,
    pub out: B::Buf,
    pub norm_mean: B::Buf,
    pub norm_rstd: B::Buf,
}

/// Per-block drop-path scales for one group: `scales[l] = (branch 1, branch 2)`, each B values in
/// {0, 1/keep}. `None` means no drop path (teacher, evaluation, parity).
pub type DropScales = Option<Vec<(Vec<f32>, Vec<f32>)>>;

/// A forward group's drop-path scales on the device: `(buf, off)` holds, from element `off`, the
/// 2·depth vectors of B values of [`DropScales`] in block order (block l's attention branch at
/// off + 2l·B, its MLP branch at off + (2l + 1)·B). The training step uploads all its groups' scales
/// in one buffer (one upload per step: [`flat_scales`]); `None` means no drop path.
pub type DeviceScales<'a, B> = Option<(&'a <B as Backend>::Buf, usize)>;

/// The scales of [`DropScales`] in the order [`DeviceScales`] reads them.
pub fn flat_scales(drop: &DropScales) -> Vec<f32> {
    drop.iter()
        .flatten()
        .flat_map(|(a, m)| a.iter().chain(m).copied())
        .collect()
}

/// Forward of the backbone on `imgs` (B, CH, side, side) with parameters `params`.
pub fn backbone_forward<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    offs: &BackboneOffs,
    params: &B::Buf,
    interp: &B::Buf,
    imgs: &B::Buf,
    b: usize,
    side: usize,
    drop: DeviceScales<B>,
) -> Result<GroupActs<B>> {
    let (ch, pz, c) = (cfg.in_chans, cfg.patch, cfg.dim);
    ensure!(
        side.is_multiple_of(pz),
        "crop side {side} is not a multiple of the patch size {pz}"
    );
    ensure!(
        be.buf_len(imgs) == b * ch * side * side,
        "image buffer holds {} values, expected B·CH·H·W = {b}·{ch}·{side}·{side}",
        be.buf_len(imgs)
    );
    let p = (side / pz) * (side / pz);
    let n = 1 + p;
    let g2 = cfg.pos_grid * cfg.pos_grid;
    let (nh, hs) = (cfg.heads, cfg.head_dim());
    let r = b * n;

    // Outputs their producer writes whole (=) need no zeroing (`Backend::uninit`); accumulators do.
    let mut patches = be.uninit(b * p * ch * pz * pz)?;
    be.patch_embed_im2col(&mut patches, imgs, b, ch, side, side, pz)?;
    let mut patch_out = be.uninit(b * p * c)?;
    be.matmul_forward(
        &mut patch_out,
        &patches,
        params,
        offs.patch_w,
        Some(offs.patch_b),
        b * p,
        ch * pz * pz,
        c,
    )?;
    let mut x0 = be.uninit(r * c)?;
    be.patch_embed_tokens_forward(
        &mut x0, &patch_out, params, offs.cls, offs.pos, interp, b, p, g2, c,
    )?;
    std::mem::drop(patch_out); // free the patch projections before the blocks allocate

    // The per-sample scales of each block's two branches: device copies of the step's uploaded draws,
    // or ones (filled on the device: nothing is uploaded here).
    let mut ones = be.uninit(b)?;
    be.fill(&mut ones, 0, b, 1.0)?;
    let scale_at = |at: usize| -> Result<B::Buf> {
        match drop {
            Some((buf, off)) => {
                let mut s = be.uninit(b)?;
                be.copy(&mut s, 0, buf, off + at * b, b)?;
                Ok(s)
            }
            None => be.copy_of(&ones),
        }
    };
    let mut xs = vec![x0];
    let mut blocks = Vec::with_capacity(cfg.depth);
    let mut branch = be.uninit(r * c)?; // each block's proj GEMM writes it whole
    for (l, o) in offs.blocks.iter().enumerate() {
        let (scale1, scale2) = (scale_at(2 * l)?, scale_at(2 * l + 1)?);
        let x_in = xs.last().expect("xs starts non-empty");
        // Attention branch: LN1 → qkv → attention → proj.
        let mut ln1 = be.uninit_act(r, c)?;
        let mut ln1_mean = be.uninit(r)?;
        let mut ln1_rstd = be.uninit(r)?;
        be.layernorm_forward(
            &mut ln1,
            &mut ln1_mean,
            &mut ln1_rstd,
            x_in,
            params,
            o.norm1_w,
            o.norm1_b,
            r,
            c,
            cfg.ln_eps,
        )?;
        let mut qkv = be.uninit(r * 3 * c)?;
        be.matmul_forward(&mut qkv, &ln1, params, o.qkv_w, Some(o.qkv_b), r, c, 3 * c)?;
        // written whole: the probabilities (f32), or the row log-sum-exps in its first B·NH·N words (bf16)
        let mut att = be.uninit(b * nh * n * n)?;
        let mut attn_o = be.uninit_act(r, c)?;
        be.attention_forward(&mut attn_o, &mut att, &qkv, b, n, nh, hs)?;
        be.matmul_forward(
            &mut branch,
            &attn_o,
            params,
            o.proj_w,
            Some(o.proj_b),
            r,
            c,
            c,
        )?;
        let m = if l + 1 == cfg.depth {
            // The last block: only the CLS rows go on (see the module notes).
            let (mut x_cls, mut branch_cls) = (be.uninit(b * c)?, be.uninit(b * c)?);
            be.residual_cls_gather(&mut x_cls, x_in, b, n, c)?;
            be.residual_cls_gather(&mut branch_cls, &branch, b, n, c)?;
            mlp_forward(
                be,
                cfg,
                o,
                params,
                &x_cls,
                &branch_cls,
                &scale1,
                &scale2,
                b,
                1,
            )?
        } else {
            mlp_forward(be, cfg, o, params, x_in, &branch, &scale1, &scale2, r, n)?
        };
        xs.push(m.x_mid);
        xs.push(m.x_out);
        blocks.push(BlockActs {
            ln1,
            ln1_mean,
            ln1_rstd,
            qkv,
            att,
            attn_o,
            ln2: m.ln2,
            ln2_mean: m.ln2_mean,
            ln2_rstd: m.ln2_rstd,
            fc1: m.fc1,
            gelu: m.gelu,
            scale1,
            scale2,
        });
    }
    // The last block's output holds only the CLS rows (a depth-0 model's is the token stream).
    let mut cls = be.uninit(b * c)?;
    let rows_per_image = if cfg.depth > 0 { 1 } else { n };
    be.residual_cls_gather(
        &mut cls,
        xs.last().expect("non-empty"),
        b,
        rows_per_image,
        c,
    )?;
    let mut out = be.uninit(b * c)?;
    let mut norm_mean = be.uninit(b)?;
    let mut norm_rstd = be.uninit(b)?;
    be.layernorm_forward(
        &mut out,
        &mut norm_mean,
        &mut norm_rstd,
        &cls,
        params,
        offs.norm_w,
        offs.norm_b,
        b,
        c,
        cfg.ln_eps,
    )?;
    Ok(GroupActs {
        b,
        side,
        n,
        p,
        patches,
        xs,
        blocks,
        cls,
        out,
        norm_mean,
        norm_rstd,
    })
}

/// The MLP half of a block's outputs.
struct MlpActs<B: Backend> {
    x_mid: B::Buf,
    ln2: B::Buf,
    ln2_mean: B::Buf,
    ln2_rstd: B::Buf,
    fc1: B::Buf,
    gelu: B::Buf,
    x_out: B::Buf,
}

/// The MLP half of a block on `rows` rows (`n` per image, for the drop-path scales):
/// x_mid = x_in + s1·branch and LN2(x_mid) in one pass; fc1 with GELU in its epilogue; fc2 with the
/// residual add x_out = x_mid + s2·fc2(…) in its epilogue.
#[allow(clippy::too_many_arguments)]
fn mlp_forward<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    o: &BlockOffs,
    params: &B::Buf,
    x_in: &B::Buf,
    branch: &B::Buf,
    scale1: &B::Buf,
    scale2: &B::Buf,
    rows: usize,
    n: usize,
) -> Result<MlpActs<B>> {
    let (c, f) = (cfg.dim, cfg.mlp_hidden);
    let mut x_mid = be.uninit(rows * c)?;
    let mut ln2 = be.uninit_act(rows, c)?;
    let mut ln2_mean = be.uninit(rows)?;
    let mut ln2_rstd = be.uninit(rows)?;
    be.layernorm_forward_residual(
        &mut x_mid,
        &mut ln2,
        &mut ln2_mean,
        &mut ln2_rstd,
        x_in,
        branch,
        scale1,
        params,
        o.norm2_w,
        o.norm2_b,
        rows,
        c,
        n,
        cfg.ln_eps,
    )?;
    let mut fc1 = be.uninit(rows * f)?;
    let mut gelu = be.uninit_act(rows, f)?;
    be.matmul_forward_gelu(
        &mut fc1, &mut gelu, &ln2, params, o.fc1_w, o.fc1_b, rows, c, f,
    )?;
    let mut x_out = be.uninit(rows * c)?;
    be.matmul_forward_residual(
        &mut x_out, &gelu, params, o.fc2_w, o.fc2_b, &x_mid, scale2, rows, f, c, n,
    )?;
    Ok(MlpActs {
        x_mid,
        ln2,
        ln2_mean,
        ln2_rstd,
        fc1,
        gelu,
        x_out,
    })
}

/// Gradient scratch of an MLP backward on some number of rows.
struct MlpGrads<B: Backend> {
    dbranch: B::Buf,
    dgelu: B::Buf,
    dfc1: B::Buf,
    dln: B::Buf,
}

impl<B: Backend> MlpGrads<B> {
    fn new(be: &B, rows: usize, c: usize, f: usize) -> Result<Self> {
        // every one is an (=) output of the op that writes it (residual_backward, matmul_backward's
        // dinp, gelu_backward) before anything reads it
        Ok(MlpGrads {
            dbranch: be.uninit(rows * c)?,
            dgelu: be.uninit(rows * f)?,
            dfc1: be.uninit(rows * f)?,
            dln: be.uninit(rows * c)?,
        })
    }
}

/// Backward of `mlp_forward` on `rows` rows (`n` per image): `dx` holds dL/dx_out and becomes
/// dL/dx_mid (the residual path plus LN2's gradient, accumulated); weight gradients accumulate.
#[allow(clippy::too_many_arguments)]
fn mlp_backward<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    o: &BlockOffs,
    a: &BlockActs<B>,
    params: &B::Buf,
    grads: &mut B::Buf,
    dx: &mut B::Buf,
    x_mid: &B::Buf,
    rows: usize,
    n: usize,
    g: &mut MlpGrads<B>,
) -> Result<()> {
    let (c, f) = (cfg.dim, cfg.mlp_hidden);
    be.residual_backward(&mut g.dbranch, dx, &a.scale2, rows / n, n * c)?;
    be.matmul_backward(
        Some(&mut g.dgelu),
        grads,
        o.fc2_w,
        Some(o.fc2_b),
        &g.dbranch,
        &a.gelu,
        params,
        o.fc2_w,
        rows,
        f,
        c,
    )?;
    be.gelu_backward(&mut g.dfc1, &g.dgelu, &a.fc1, rows * f)?;
    be.matmul_backward(
        Some(&mut g.dln),
        grads,
        o.fc1_w,
        Some(o.fc1_b),
        &g.dfc1,
        &a.ln2,
        params,
        o.fc1_w,
        rows,
        c,
        f,
    )?;
    be.layernorm_backward(
        dx,
        grads,
        o.norm2_w,
        o.norm2_b,
        &g.dln,
        x_mid,
        params,
        o.norm2_w,
        &a.ln2_mean,
        &a.ln2_rstd,
        rows,
        c,
    )
}

/// Backward of the backbone: `dout` (B, C) is the gradient of the final-LN CLS output; parameter
/// gradients accumulate into `grads` (+=).
pub fn backbone_backward<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    offs: &BackboneOffs,
    params: &B::Buf,
    grads: &mut B::Buf,
    interp: &B::Buf,
    acts: &GroupActs<B>,
    dout: &B::Buf,
) -> Result<()> {
    let (ch, pz, c) = (cfg.in_chans, cfg.patch, cfg.dim);
    let (b, n, p) = (acts.b, acts.n, acts.p);
    let (nh, hs, f) = (cfg.heads, cfg.head_dim(), cfg.mlp_hidden);
    let r = b * n;
    let g2 = cfg.pos_grid * cfg.pos_grid;

    // Final LN on the CLS rows, then scatter into the residual-stream gradient.
    let mut dcls = be.zeros(b * c)?;
    be.layernorm_backward(
        &mut dcls,
        grads,
        offs.norm_w,
        offs.norm_b,
        dout,
        &acts.cls,
        params,
        offs.norm_w,
        &acts.norm_mean,
        &acts.norm_rstd,
        b,
        c,
    )?;
    // The last block's MLP ran on the CLS rows only: its backward too, then the CLS gradient enters
    // the token stream.
    if let Some(l) = cfg.depth.checked_sub(1) {
        let mut g = MlpGrads::new(be, b, c, f)?;
        let (o, a, x_mid) = (&offs.blocks[l], &acts.blocks[l], &acts.xs[2 * l + 1]);
        mlp_backward(be, cfg, o, a, params, grads, &mut dcls, x_mid, b, 1, &mut g)?;
    }
    let mut dx = be.uninit(r * c)?; // written whole (=) by the scatter, then accumulated into
    be.residual_cls_scatter(&mut dx, &dcls, b, n, c)?;

    let mut g = MlpGrads::new(be, r, c, f)?;
    let mut dattn_o = be.uninit(r * c)?; // matmul_backward's dinp (=)
    let mut dqkv = be.uninit(r * 3 * c)?; // attention_backward's dqkv (=)
    let mut datt = be.uninit(b * nh * n * n)?; // scratch the f32 backward writes whole before reading
    for l in (0..cfg.depth).rev() {
        let o = &offs.blocks[l];
        let a = &acts.blocks[l];
        let x_in = &acts.xs[2 * l];
        if l + 1 < cfg.depth {
            // MLP branch: x_out = x_mid + s2·fc2(gelu(fc1(ln2(x_mid)))).
            let x_mid = &acts.xs[2 * l + 1];
            mlp_backward(be, cfg, o, a, params, grads, &mut dx, x_mid, r, n, &mut g)?;
        }
        let MlpGrads { dbranch, dln, .. } = &mut g;
        // Attention branch: x_mid = x_in + s1·proj(attn(qkv(ln1(x_in)))).
        be.residual_backward(dbranch, &dx, &a.scale1, b, n * c)?;
        be.matmul_backward(
            Some(&mut dattn_o),
            grads,
            o.proj_w,
            Some(o.proj_b),
            dbranch,
            &a.attn_o,
            params,
            o.proj_w,
            r,
            c,
            c,
        )?;
        be.attention_backward(&mut dqkv, &mut datt, &dattn_o, &a.qkv, &a.att, b, n, nh, hs)?;
        be.matmul_backward(
            Some(dln),
            grads,
            o.qkv_w,
            Some(o.qkv_b),
            &dqkv,
            &a.ln1,
            params,
            o.qkv_w,
            r,
            c,
            3 * c,
        )?;
        be.layernorm_backward(
            &mut dx,
            grads,
            o.norm1_w,
            o.norm1_b,
            dln,
            x_in,
            params,
            o.norm1_w,
            &a.ln1_mean,
            &a.ln1_rstd,
            r,
            c,
        )?;
    }
    // Tokens: CLS, positions (through the interpolation transpose), patch embedding.
    let mut dpatch_out = be.uninit(b * p * c)?; // (=)
    be.patch_embed_tokens_backward(
        grads,
        offs.cls,
        offs.pos,
        &mut dpatch_out,
        &dx,
        interp,
        b,
        p,
        g2,
        c,
    )?;
    be.matmul_backward(
        None,
        grads,
        offs.patch_w,
        Some(offs.patch_b),
        &dpatch_out,
        &acts.patches,
        params,
        offs.patch_w,
        b * p,
        ch * pz * pz,
        c,
    )?;
    Ok(())
}

/// The 4×C embedding of each image: the CLS rows after each of the last 4 blocks (fewer if the model
/// is shallower), each through the final LayerNorm, concatenated (algorithm.md §1.4). out: (B, 4C).
pub fn embedding<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    offs: &BackboneOffs,
    params: &B::Buf,
    acts: &GroupActs<B>,
) -> Result<(B::Buf, usize)> {
    let (b, n, c) = (acts.b, acts.n, cfg.dim);
    let k = cfg.depth.min(4);
    let tc = k * c;
    let mut out = be.zeros(b * tc)?;
    let mut cls = be.zeros(b * c)?;
    let mut ln = be.zeros(b * c)?;
    let mut mean = be.zeros(b)?;
    let mut rstd = be.zeros(b)?;
    for (j, l) in (cfg.depth - k..cfg.depth).enumerate() {
        // the last block's output holds only the CLS rows
        let rows_per_image = if l + 1 == cfg.depth { 1 } else { n };
        be.residual_cls_gather(&mut cls, &acts.xs[2 * (l + 1)], b, rows_per_image, c)?;
        be.layernorm_forward(
            &mut ln,
            &mut mean,
            &mut rstd,
            &cls,
            params,
            offs.norm_w,
            offs.norm_b,
            b,
            c,
            cfg.ln_eps,
        )?;
        be.residual_copy_cols(&mut out, &ln, b, c, tc, j * c)?;
    }
    Ok((out, tc))
}
