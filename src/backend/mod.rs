//! The `Backend` trait: one method per kernel entry point of `kernels/*.cu`, with the same names (minus
//! the `_f32` suffix) and the same argument order: outputs, inputs, dimensions, scalars. The Set-DINO step
//! (`engine`) is written once against this trait.
//!
//! Conventions: parameter gradients accumulate (`+=`), activation gradients overwrite (`=`) except the
//! residual stream (`+=`), marked on each method. Parameters are addressed as (flat buffer, element
//! offset), so the same call works on the student, the teacher or a scratch weight buffer. Scalars are
//! passed as f64 and rounded to the backend's precision.
#![allow(clippy::too_many_arguments)]
pub mod counters;
pub mod cpu;
pub mod gpu;
pub mod precision;
pub mod select;

pub use precision::{DType, Precision};

use anyhow::Result;

/// AdamW scalars for one launch over a range, PyTorch semantics (`torch.optim.AdamW`, single tensor).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1 − β1^t
    pub bias_correction1: f64,
    /// √(1 − β2^t)
    pub bias_correction2_sqrt: f64,
}

impl AdamWHyper {
    /// The words AdamW reads from device memory (`struct AdamWHyper` of `kernels/adamw.cu`), computed
    /// in f64 and rounded once to the backend's precision: 1 − lr·wd, 1 − β1, β2, 1 − β2, lr/(1 − β1^t),
    /// √(1 − β2^t), ε, 0.
    pub fn words(&self) -> [f64; ADAMW_WORDS] {
        [
            1.0 - self.lr * self.weight_decay,
            1.0 - self.beta1,
            self.beta2,
            1.0 - self.beta2,
            self.lr / self.bias_correction1,
            self.bias_correction2_sqrt,
            self.eps,
            0.0,
        ]
    }
}

/// Words of one AdamW scalar record ([`AdamWHyper::words`]).
pub const ADAMW_WORDS: usize = 8;

/// A scalar the kernel reads from device memory: word `.1` of buffer `.0` (the step's scalar buffer,
/// refreshed by one upload per step, so a captured step replays with the new step's values).
pub type DevScalar<'a, B> = (&'a B, usize);

/// The primitive operations of the step. Shapes use the glossary of `model`.
pub trait Backend: Sync {
    /// A device buffer of scalars.
    type Buf: Send + Sync;

    /// Human-readable backend name, e.g. `cpu (f32, 2 threads, AVX2+FMA GEMMs)`.
    fn name(&self) -> String;
    /// The GEMM precision this backend computes at (see `Precision`).
    fn precision(&self) -> Precision {
        Precision::F32
    }
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// A zeroed buffer for a (rows, cols) activation whose only readers are GEMMs, as an operand (the
    /// LayerNorm outputs, the attention output, the GELU output). Stored in bf16 where the backend
    /// computes bf16 GEMMs and a row is whole 16-byte chunks (cols % 8 == 0), so the producer writes
    /// bf16 and the GEMMs read it without a conversion pass; f32 otherwise. The CPU twin keeps f32
    /// storage: each of its bf16 GEMMs rounds the operand at use, which gives the same values.
    fn zeros_act(&self, rows: usize, cols: usize) -> Result<Self::Buf> {
        self.zeros(rows * cols)
    }
    /// A buffer for an output the next op writes whole (=) before anything reads it: the GPU backend
    /// hands out a pooled block without zeroing it (no memset); elsewhere, and on a fresh allocation, it
    /// is zeroed like [`Backend::zeros`]. Never for an accumulator (+=).
    fn uninit(&self, n: usize) -> Result<Self::Buf> {
        self.zeros(n)
    }
    /// [`Backend::zeros_act`] for an activation its producer writes whole, without zeroing a pooled
    /// block (see [`Backend::uninit`]).
    fn uninit_act(&self, rows: usize, cols: usize) -> Result<Self::Buf> {
        self.zeros_act(rows, cols)
    }
    /// Element type of `buf` (f32 unless it came from `zeros_act` on a bf16 backend).
    fn dtype(&self, _buf: &Self::Buf) -> DType {
        DType::F32
    }
    /// From now on keep a bf16 copy of this f32 parameter buffer beside it: `adamw_update` and
    /// `ema_update` write it in the same pass as the f32 master (`adamw_update_bf16`, `ema_update_bf16`),
    /// `fill` and `copy` refresh it, and the bf16 GEMMs read their weights from it instead of rounding
    /// them per call. A no-op where GEMMs are f32, and on the CPU twin (its GEMMs round at use).
    fn keep_bf16_copy(&self, _params: &mut Self::Buf) -> Result<()> {
        Ok(())
    }
    /// Frees the device memory kept for reuse by dropped buffers (the GPU backend's pool), e.g. after a
    /// validation pass whose buffer sizes the training step never asks for again. A no-op elsewhere.
    fn release_pooled(&self) {}
    /// After a step that allocated: carves the memory kept for reuse from one allocation, the step's
    /// arena (the GPU backends, `GpuBackend::settle_arena`). A no-op elsewhere.
    fn settle_arena(&self) -> Result<()> {
        Ok(())
    }
    /// What this backend has done so far (launches, allocations, syncs, bytes moved), where it counts:
    /// the GPU backends (SIMT and CUDA alike) and the CPU reference (its pool's allocations and
    /// memsets, its uploads; it launches nothing and never syncs).
    fn counts(&self) -> Option<counters::Counts> {
        None
    }
    /// Whether this backend drives a device (the GPU backends, SIMT included): training then reads its
    /// monitoring values every `log_every` steps and records the step as a graph.
    fn is_device(&self) -> bool {
        false
    }
    fn upload(&self, host: &[f32]) -> Result<Self::Buf>;
    /// Writes `host` (rounded once to this backend's precision) into `dst[off..off + host.len()]`: one
    /// upload into an existing buffer, no allocation (the step's scalar buffer, [`DevScalar`]).
    fn upload_scalars(&self, dst: &mut Self::Buf, off: usize, host: &[f64]) -> Result<()>;

    /// A recorded sequence of device work that replays without the host (a CUDA graph).
    type Graph: Send;
    /// Starts recording instead of running: until [`Backend::capture_end`], the work this backend is
    /// asked for (launches, memsets, device copies) is recorded, not done, and anything that needs the
    /// host (an allocation, an upload, a download) fails. `false` (nothing started) where the backend
    /// cannot capture: the CPU reference runs every step directly.
    fn capture_begin(&self) -> Result<bool> {
        Ok(false)
    }
    /// Ends the recording begun by `capture_begin`. The graph keeps the device memory its work touched
    /// that went back to the pool during the recording (the step's temporaries), so nothing else is
    /// handed that memory while the graph lives; buffers still held by the caller must outlive it.
    /// Fails, discarding the recording, when the recorded work allocated, uploaded or synchronised.
    fn capture_end(&self) -> Result<Self::Graph>;
    /// Runs the recorded work again, on the current contents of the memory it reads.
    fn replay(&self, graph: &Self::Graph) -> Result<()>;
    /// Raw u16 values (stored crops) for `augment_render`: the GPU backend keeps them packed two per
    /// word (`DType::U16`, half the bytes of f32); elsewhere they become f32 values.
    fn upload_u16(&self, host: &[u16]) -> Result<Self::Buf> {
        self.upload(&host.iter().map(|&v| f32::from(v)).collect::<Vec<_>>())
    }
    /// A step's inputs in one transfer: the stored u16 `cells` (as [`Backend::upload_u16`] keeps them) and
    /// the f32 `parts` (crop parameters, statistics). The GPU backend writes them into page-locked host
    /// memory, double-buffered, and copies them on a second stream, so the copy of the next step's
    /// inputs overlaps the step before; every read of the returned buffers must be issued before the
    /// next call (the training loop renders the crops at once). Elsewhere: `upload_u16` and `upload`.
    fn upload_step_inputs(
        &self,
        cells: &[u16],
        parts: &[&[f32]],
    ) -> Result<(Self::Buf, Vec<Self::Buf>)> {
        let parts = parts
            .iter()
            .map(|p| self.upload(p))
            .collect::<Result<Vec<_>>>()?;
        Ok((self.upload_u16(cells)?, parts))
    }
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// Download at full precision (f64 backends lose nothing; f32 backends widen).
    fn download_f64(&self, buf: &Self::Buf) -> Result<Vec<f64>> {
        Ok(self.download(buf)?.into_iter().map(f64::from).collect())
    }
    fn buf_len(&self, buf: &Self::Buf) -> usize;
    /// A new buffer holding a copy of `src`.
    fn copy_of(&self, src: &Self::Buf) -> Result<Self::Buf> {
        let n = self.buf_len(src);
        let mut dst = self.uninit(n)?; // written whole by the copy
        self.copy(&mut dst, 0, src, 0, n)?;
        Ok(dst)
    }
    /// buf[off..off+n] = value
    fn fill(&self, buf: &mut Self::Buf, off: usize, n: usize, value: f64) -> Result<()>;
    /// dst[dst_off..+n] = src[src_off..+n]
    fn copy(
        &self,
        dst: &mut Self::Buf,
        dst_off: usize,
        src: &Self::Buf,
        src_off: usize,
        n: usize,
    ) -> Result<()>;

    // ---- patch_embed.cu
    /// out: (B·P, CH·p·p) patches in Conv2d weight order (ch, ky, kx); img: (B, CH, H, W).
    fn patch_embed_im2col(
        &self,
        out: &mut Self::Buf,
        img: &Self::Buf,
        b: usize,
        ch: usize,
        h: usize,
        w: usize,
        p: usize,
    ) -> Result<()>;
    /// x: (B, N, C) with x[b,0] = cls + pos[0], x[b,1+i] = patch_out[b,i] + Σ_g interp[i,g]·pos[1+g].
    /// patch_out: (B·P, C); cls: (C) and pos: (1+G2, C) at offsets in `params`; interp: (P, G2).
    fn patch_embed_tokens_forward(
        &self,
        x: &mut Self::Buf,
        patch_out: &Self::Buf,
        params: &Self::Buf,
        cls_off: usize,
        pos_off: usize,
        interp: &Self::Buf,
        b: usize,
        p: usize,
        g2: usize,
        c: usize,
    ) -> Result<()>;
    /// dparams at cls_off, pos_off (+=); dpatch_out: (B·P, C) (=); dx: (B, N, C).
    fn patch_embed_tokens_backward(
        &self,
        dparams: &mut Self::Buf,
        cls_off: usize,
        pos_off: usize,
        dpatch_out: &mut Self::Buf,
        dx: &Self::Buf,
        interp: &Self::Buf,
        b: usize,
        p: usize,
        g2: usize,
        c: usize,
    ) -> Result<()>;

    // ---- matmul.cu
    /// out: (R, O) = inp (R, I) · Wᵀ + bias; W: (O, I) at w_off, bias: (O) at b_off.
    fn matmul_forward(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        w_off: usize,
        b_off: Option<usize>,
        r: usize,
        i: usize,
        o: usize,
    ) -> Result<()>;
    /// `matmul_forward` in f32 at every precision: the head's prototype layer, whose logits the loss
    /// divides by the temperatures (0.1 student, down to 0.01 teacher). bf16 operands would move a logit
    /// by ~u·|logit| (u = 2⁻⁹) and the softmax exponent by that over τ: at τ = 0.01 a fifth of its scale.
    /// The default is the backend's own GEMM (right for f32 backends).
    fn matmul_forward_full(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        w_off: usize,
        b_off: Option<usize>,
        r: usize,
        i: usize,
        o: usize,
    ) -> Result<()> {
        self.matmul_forward(out, inp, params, w_off, b_off, r, i, o)
    }
    /// `matmul_backward` in f32 at every precision (the prototype layer's backward).
    fn matmul_backward_full(
        &self,
        dinp: Option<&mut Self::Buf>,
        dparams: &mut Self::Buf,
        dw_off: usize,
        db_off: Option<usize>,
        dout: &Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        w_off: usize,
        r: usize,
        i: usize,
        o: usize,
    ) -> Result<()> {
        self.matmul_backward(
            dinp, dparams, dw_off, db_off, dout, inp, params, w_off, r, i, o,
        )
    }
    /// The MLP's first layer: pre (=) = inp · Wᵀ + bias (kept for the GELU backward) and act (=) =
    /// GELU(pre). Backends with a fused epilogue override it (bf16: `matmul_forward_gelu_bf16`).
    fn matmul_forward_gelu(
        &self,
        pre: &mut Self::Buf,
        act: &mut Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        w_off: usize,
        b_off: usize,
        r: usize,
        i: usize,
        o: usize,
    ) -> Result<()> {
        self.matmul_forward(pre, inp, params, w_off, Some(b_off), r, i, o)?;
        self.gelu_forward(act, pre, r * o)
    }
    /// The second Linear of a residual branch, with the residual add and its drop-path scale in the GEMM
    /// epilogue: out (=) = resid + scale[row / n]·(inp · Wᵀ + bias); out, resid: (R, O); scale: (R / n).
    /// The backward is `residual_backward` then `matmul_backward` (the branch itself is not kept).
    /// Backends with a fused epilogue override it (bf16: `matmul_forward_residual_bf16`).
    fn matmul_forward_residual(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        w_off: usize,
        b_off: usize,
        resid: &Self::Buf,
        scale: &Self::Buf,
        r: usize,
        i: usize,
        o: usize,
        n: usize,
    ) -> Result<()> {
        anyhow::ensure!(
            n > 0 && r.is_multiple_of(n),
            "residual GEMM: {r} rows are not whole samples of {n}"
        );
        let mut branch = self.uninit(r * o)?; // written whole (=) by the GEMM
        self.matmul_forward(&mut branch, inp, params, w_off, Some(b_off), r, i, o)?;
        self.residual_forward(out, resid, &branch, scale, r / n, n * o)
    }
    /// dinp: (R, I) (=) if given; dW (+=) at dw_off, db (+=) at db_off in dparams; dout: (R, O).
    fn matmul_backward(
        &self,
        dinp: Option<&mut Self::Buf>,
        dparams: &mut Self::Buf,
        dw_off: usize,
        db_off: Option<usize>,
        dout: &Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        w_off: usize,
        r: usize,
        i: usize,
        o: usize,
    ) -> Result<()>;

    // ---- layernorm.cu
    /// out: (R, C); mean, rstd: (R); weight, bias: (C) at offsets in params. Biased variance.
    fn layernorm_forward(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        w_off: usize,
        b_off: usize,
        r: usize,
        c: usize,
        eps: f64,
    ) -> Result<()>;
    /// The residual add fused with the LayerNorm after it: x (=) = inp + scale[row / n]·branch, then
    /// out, mean, rstd = LayerNorm(x) as `layernorm_forward`. x, inp, branch, out: (R, C); scale: (R / n).
    fn layernorm_forward_residual(
        &self,
        x: &mut Self::Buf,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        branch: &Self::Buf,
        scale: &Self::Buf,
        params: &Self::Buf,
        w_off: usize,
        b_off: usize,
        r: usize,
        c: usize,
        n: usize,
        eps: f64,
    ) -> Result<()>;
    /// dinp: (R, C) (+=, residual stream); dweight, dbias (+=).
    fn layernorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dparams: &mut Self::Buf,
        dw_off: usize,
        db_off: usize,
        dout: &Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        w_off: usize,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        r: usize,
        c: usize,
    ) -> Result<()>;

    // ---- attention.cu
    /// out: (B, N, C) heads concatenated; att: (B, NH, N, N) softmax probabilities;
    /// qkv: (B, N, 3C) laid out [3][NH][HS]; scale HS^-0.5.
    fn attention_forward(
        &self,
        out: &mut Self::Buf,
        att: &mut Self::Buf,
        qkv: &Self::Buf,
        b: usize,
        n: usize,
        nh: usize,
        hs: usize,
    ) -> Result<()>;
    /// dqkv: (B, N, 3C) (=); datt: (B, NH, N, N) scratch; dout: (B, N, C).
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        datt: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        att: &Self::Buf,
        b: usize,
        n: usize,
        nh: usize,
        hs: usize,
    ) -> Result<()>;

    // ---- gelu.cu
    /// out = x·Φ(x) (exact erf GELU), n elements.
    fn gelu_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, n: usize) -> Result<()>;
    /// dinp (=) = dout·GELU'(inp).
    fn gelu_backward(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        n: usize,
    ) -> Result<()>;

    // ---- residual.cu
    /// out[b] = inp[b] + scale[b]·branch[b]; each of B samples has M elements; scale: (B) drop-path.
    fn residual_forward(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        branch: &Self::Buf,
        scale: &Self::Buf,
        b: usize,
        m: usize,
    ) -> Result<()>;
    /// dbranch[b] (=) = scale[b]·dout[b]. (The identity path is the residual stream itself.)
    fn residual_backward(
        &self,
        dbranch: &mut Self::Buf,
        dout: &Self::Buf,
        scale: &Self::Buf,
        b: usize,
        m: usize,
    ) -> Result<()>;
    /// out: (B, C) = x[:, 0, :] with x: (B, N, C).
    fn residual_cls_gather(
        &self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        b: usize,
        n: usize,
        c: usize,
    ) -> Result<()>;
    /// dx (=): dout on the CLS rows dx[:, 0, :], 0 elsewhere; dx: (B, N, C), dout: (B, C). The first
    /// writer of the residual-stream gradient (no zeroing before it).
    fn residual_cls_scatter(
        &self,
        dx: &mut Self::Buf,
        dout: &Self::Buf,
        b: usize,
        n: usize,
        c: usize,
    ) -> Result<()>;
    /// out[:, col_off..col_off+C] = inp; out: (R, TC), inp: (R, C).
    fn residual_copy_cols(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        r: usize,
        c: usize,
        tc: usize,
        col_off: usize,
    ) -> Result<()>;

    // ---- set_mean.cu
    /// out: (S, C) mean over n consecutive rows of inp: (S·n, C).
    fn set_mean_forward(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        s: usize,
        n: usize,
        c: usize,
    ) -> Result<()>;
    /// dinp (=) (S·n, C) = dout[s]/n.
    fn set_mean_backward(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        s: usize,
        n: usize,
        c: usize,
    ) -> Result<()>;

    // ---- koleo.cu
    /// Per row of G groups of R unit rows y (G·R, C): nn = the index within the group of the most similar
    /// other row (ties: the lower), dist = ‖ŷᵢ − ŷ_nn‖. R ≥ 2.
    fn koleo_forward(
        &self,
        nn: &mut Self::Buf,
        dist: &mut Self::Buf,
        y: &Self::Buf,
        g: usize,
        r: usize,
        c: usize,
    ) -> Result<()>;
    /// loss (=, 1 value) = −(w/N)·Σ log(dist + eps); dinp (+=) the gradient with respect to x, y = x/norm.
    fn koleo_backward(
        &self,
        dinp: &mut Self::Buf,
        loss: &mut Self::Buf,
        nn: &Self::Buf,
        dist: &Self::Buf,
        y: &Self::Buf,
        norm: &Self::Buf,
        g: usize,
        r: usize,
        c: usize,
        weight: f64,
        eps: f64,
    ) -> Result<()>;

    // ---- l2norm.cu
    /// out = inp / max(‖inp‖, eps) per row; norm: (R) the unclamped norms.
    fn l2norm_forward(
        &self,
        out: &mut Self::Buf,
        norm: &mut Self::Buf,
        inp: &Self::Buf,
        r: usize,
        c: usize,
        eps: f64,
    ) -> Result<()>;
    /// dinp (=).
    fn l2norm_backward(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        out: &Self::Buf,
        norm: &Self::Buf,
        r: usize,
        c: usize,
        eps: f64,
    ) -> Result<()>;

    // ---- weightnorm.cu
    /// w: (K, C) = g[k]·v[k]/‖v[k]‖; norm: (K); v at v_off, g: (K) at g_off in params.
    fn weightnorm_forward(
        &self,
        w: &mut Self::Buf,
        norm: &mut Self::Buf,
        params: &Self::Buf,
        v_off: usize,
        g_off: usize,
        k: usize,
        c: usize,
    ) -> Result<()>;
    /// dv (+=) at v_off in dparams = g/‖v‖·(dw − v̂·(v̂·dw)) per row.
    fn weightnorm_backward(
        &self,
        dparams: &mut Self::Buf,
        v_off: usize,
        dw: &Self::Buf,
        params: &Self::Buf,
        g_off: usize,
        norm: &Self::Buf,
        k: usize,
        c: usize,
    ) -> Result<()>;

    // ---- dino_loss.cu
    /// L = (1/T)·Σ_{iq<2} Σ_{v≠iq} mean_s −Σ_k q_iq·log softmax(student_v/τs), q = softmax((t − center)/τt),
    /// T = 2V − 2 terms. loss: (1); dstudent: (V·S, K) (=) dL/dlogits; tprobs: (2S, K) = q;
    /// student: (V·S, K) view-major; teacher: (2S, K); center: (K), or None when tprobs already holds
    /// the teacher targets (from `dino_loss_sinkhorn`).
    fn dino_loss_forward_backward(
        &self,
        loss: &mut Self::Buf,
        dstudent: &mut Self::Buf,
        tprobs: &mut Self::Buf,
        student: &Self::Buf,
        teacher: &Self::Buf,
        center: Option<&Self::Buf>,
        v: usize,
        s: usize,
        k: usize,
        student_temp: f64,
        teacher_temp: DevScalar<Self::Buf>,
    ) -> Result<()>;
    /// tprobs: (R, K) = Sinkhorn–Knopp teacher targets of teacher (R, K) at τt with `iters` iterations
    /// (DINOv2's centering; every row sums to 1, every prototype gets ≈ 1/K of the batch's mass).
    fn dino_loss_sinkhorn(
        &self,
        tprobs: &mut Self::Buf,
        teacher: &Self::Buf,
        r: usize,
        k: usize,
        teacher_temp: DevScalar<Self::Buf>,
        iters: usize,
    ) -> Result<()>;
    /// center = m·center + (1 − m)·mean over R rows of teacher (R, K).
    fn dino_loss_center_update(
        &self,
        center: &mut Self::Buf,
        teacher: &Self::Buf,
        r: usize,
        k: usize,
        momentum: f64,
    ) -> Result<()>;

    /// stats[4·slot..+4] = (loss[0], mean entropy of the rp rows of the teacher targets `tprobs`, 1 if the
    /// rt ≥ 2 `teacher` rows are all equal (collapse) else 0, 0): one step's monitoring values written on
    /// the device, so the training loop reads them every `log_every` steps instead of syncing each step.
    #[allow(clippy::too_many_arguments)]
    fn dino_loss_monitor(
        &self,
        stats: &mut Self::Buf,
        loss: &Self::Buf,
        tprobs: &Self::Buf,
        teacher: &Self::Buf,
        slot: usize,
        rp: usize,
        rt: usize,
        k: usize,
    ) -> Result<()>;

    // ---- augment.cu
    /// out: (n, C, size, size) augmented crops; src: (cells, C, crop, crop) raw u16 values as floats;
    /// params: (n, 8 + 2C) per crop [flip_ud, flip_lr, rot90, r0, rows, c0, cols, cell, gamma[C], offset[C]]
    /// (the parameters `data::augment::CropParams` draws).
    fn augment_render(
        &self,
        out: &mut Self::Buf,
        src: &Self::Buf,
        params: &Self::Buf,
        n: usize,
        c: usize,
        crop: usize,
        size: usize,
    ) -> Result<()>;
    /// x (in place): (n, C, HW) = (x − mean)·inv with stats (n, C, 2) = (mean, inv).
    fn augment_normalize_ntc(
        &self,
        x: &mut Self::Buf,
        stats: &Self::Buf,
        n: usize,
        c: usize,
        hw: usize,
    ) -> Result<()>;
    /// x (in place): per (crop, channel) (x − mean)/(std + 1e-6), population std.
    fn augment_normalize_zscore(
        &self,
        x: &mut Self::Buf,
        n: usize,
        c: usize,
        hw: usize,
    ) -> Result<()>;

    // ---- adamw.cu / ema.cu / reduce.cu
    /// For each (off, len) tensor: g *= max_norm/(‖g‖+1e-6) when that factor is < 1.
    fn reduce_clip_per_tensor(
        &self,
        grads: &mut Self::Buf,
        ranges: &[(usize, usize)],
        max_norm: f64,
    ) -> Result<()>;
    /// AdamW over [lo, hi) of the flat buffers (PyTorch semantics); `hyper` points at the
    /// [`ADAMW_WORDS`] words of [`AdamWHyper::words`].
    fn adamw_update(
        &self,
        params: &mut Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        grads: &Self::Buf,
        lo: usize,
        hi: usize,
        hyper: DevScalar<Self::Buf>,
    ) -> Result<()>;
    /// teacher = m·teacher + (1 − m)·student over n elements; `momentum` points at the two words
    /// (m, 1 − m).
    fn ema_update(
        &self,
        teacher: &mut Self::Buf,
        student: &Self::Buf,
        n: usize,
        momentum: DevScalar<Self::Buf>,
    ) -> Result<()>;
}
