//! The CPU reference backend: the spec every other backend is tested against. Clear code first: rayon
//! over outer (row) loops only, matmuls through the `gemm` crate, no SIMD intrinsics. Generic over the
//! scalar (`f32` for training, `f64` for finite-difference checks). Every reduction has a fixed order
//! (fixed chunking, never thread-count dependent), so runs are bit-identical from run to run.
//! File for file, it mirrors `kernels/*.cu`.
#![allow(clippy::too_many_arguments)]
pub mod attention;
pub mod augment;
pub mod dino_loss;
pub mod gelu;
pub mod koleo;
pub mod l2norm;
pub mod layernorm;
pub mod matmul;
pub mod optim;
pub mod patch_embed;
pub mod pool;
pub mod profile;
pub mod residual;
pub mod set_mean;
pub mod small_gemm;
pub mod weightnorm;

use super::{Backend, DevScalar, Precision, ADAMW_WORDS};
use anyhow::{ensure, Result};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;

pub use pool::CpuBuf;

/// Scalar type of the CPU backend.
pub trait Real:
    num_traits::Float
    + Send
    + Sync
    + Default
    + Debug
    + 'static
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
{
    fn c(x: f64) -> Self;
    fn d(self) -> f64;
    fn erf(self) -> Self;
    /// erf for the GELU (and its backward): branch-free arithmetic that the compiler vectorizes (f32: a rational
    /// approximation, |error| ≤ 4.3e-7 on all of ℝ, see `gelu::erf_f32`); the exact `erf` elsewhere
    /// (f64, the finite-difference backend).
    fn erf_fast(self) -> Self {
        self.erf()
    }
    /// exp for the GELU backward and the f32 softmax, the same way (f32: `gelu::exp_f32`, ≤ 2 ulp).
    fn exp_fast(self) -> Self {
        self.exp()
    }
    const NAME: &'static str;
}

impl Real for f32 {
    fn c(x: f64) -> Self {
        x as f32
    }
    fn d(self) -> f64 {
        self as f64
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
    fn erf_fast(self) -> Self {
        gelu::erf_f32(self)
    }
    fn exp_fast(self) -> Self {
        gelu::exp_f32(self)
    }
    const NAME: &'static str = "f32";
}

impl Real for f64 {
    fn c(x: f64) -> Self {
        x
    }
    fn d(self) -> f64 {
        self
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    const NAME: &'static str = "f64";
}

/// The instruction set the `gemm` crate's kernels run at on this CPU: AVX-512 where the build has the
/// `avx512` feature and the CPU avx512f, else AVX2+FMA where the CPU has them.
pub fn gemm_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "AVX2+FMA";
        }
    }
    "portable"
}

/// The 8 partial sums of `dot`, `dot4`, `sum8_by` (and the LayerNorm and clip sums) plus the tail,
/// combined in one fixed order: the results never depend on the thread count or the run.
#[inline(always)]
pub fn combine8<T: Real>(a: [T; 8], tail: T) -> T {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail
}

/// Σ a[i]·b[i] with 8 independent partial sums (so the compiler vectorizes it; a plain `sum` is a
/// serial chain: IEEE addition is not reassociated), combined in a fixed order: deterministic.
#[inline(always)]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = T::zero();
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    combine8(acc, tail)
}

/// Σ f(x[i]) with 8 independent partial sums combined in a fixed order (vectorizes; deterministic).
#[inline(always)]
pub fn sum8_by<T: Real>(x: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); 8];
    let mut cx = x.chunks_exact(8);
    for ch in &mut cx {
        for l in 0..8 {
            acc[l] += f(ch[l]);
        }
    }
    let mut tail = T::zero();
    for &v in cx.remainder() {
        tail += f(v);
    }
    combine8(acc, tail)
}

/// `dot` of four rows against one: each chunk of `b` is loaded once for the four (register blocking).
/// Every row's sum is formed exactly as `dot` forms it, so `dot4(a, b)[r] == dot(a[r], b)`.
#[inline(always)]
pub fn dot4<T: Real>(a: [&[T]; 4], b: &[T]) -> [T; 4] {
    let n = a.iter().map(|r| r.len()).fold(b.len(), usize::min);
    let mut acc = [[T::zero(); 8]; 4];
    let chunks = n / 8;
    for c in 0..chunks {
        let y = &b[c * 8..c * 8 + 8];
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = &a[r][c * 8..c * 8 + 8];
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
    }
    let mut out = [T::zero(); 4];
    for (r, o) in out.iter_mut().enumerate() {
        let mut tail = T::zero();
        for k in chunks * 8..n {
            tail += a[r][k] * b[k];
        }
        *o = combine8(acc[r], tail);
    }
    out
}

/// y += g·x, elementwise (vectorizes).
#[inline(always)]
pub fn axpy<T: Real>(y: &mut [T], g: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += g * x;
    }
}

/// Rows per chunk in chunked reductions (fixed so results never depend on the thread count).
pub const REDUCE_CHUNK: usize = 64;

/// The CPU backend over scalar `T`; buffers are vectors that return to the backend's pool
/// ([`CpuBuf`]) when dropped, shared by clones of the backend.
#[derive(Default, Clone)]
pub struct CpuBackend<T: Real> {
    _t: PhantomData<T>,
    precision: Precision,
    pool: Arc<pool::Pool<T>>,
    poison: bool,
}

impl<T: Real> CpuBackend<T> {
    pub fn new() -> Self {
        keep_freed_memory();
        CpuBackend {
            _t: PhantomData,
            precision: Precision::F32,
            pool: Arc::default(),
            poison: false,
        }
    }
    /// The CPU twin of a GPU backend at `precision` (bf16: GEMM operands rounded as the kernels do).
    pub fn with_precision(precision: Precision) -> Self {
        CpuBackend {
            precision,
            ..Self::new()
        }
    }
}

impl<T: Real> CpuBackend<T> {
    /// From now on [`Backend::uninit`] hands out buffers filled with NaN instead of what their last
    /// user left: an op that reads any element of its (=) output before writing it then shows NaN. For
    /// tests; training with it on computes the same bits as with it off.
    pub fn poison_uninit(mut self) -> Self {
        self.poison = true;
        self
    }
    /// Elements held by freed buffers waiting for reuse.
    pub fn pooled_elements(&self) -> usize {
        self.pool.pooled_elements()
    }
    /// This backend at f32 GEMM precision (the `_full` ops).
    fn at_f32(&self) -> Self {
        CpuBackend {
            precision: Precision::F32,
            ..self.clone()
        }
    }
}

/// The step allocates its activations afresh on every call. With glibc's defaults, large blocks are
/// mmap'ed and unmapped each time, so every step pays page faults and kernel page clearing (13% of a
/// ViT-S step when measured). Serving all blocks from the heap and never trimming it lets freed
/// activations be reused. Process-wide and idempotent; a no-op off glibc.
fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator tuning parameters; it is called once, before the
        // backend allocates, and both values are valid for these parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    });
}

/// The `n` words of a [`DevScalar`], bounds checked.
fn scalar<'a, T: Real>(
    (buf, at): DevScalar<'a, CpuBuf<T>>,
    n: usize,
    what: &str,
) -> Result<&'a [T]> {
    buf.get(at..at.saturating_add(n)).ok_or_else(|| {
        anyhow::anyhow!(
            "{what}: {n} words at {at} of a scalar buffer of {}",
            buf.len()
        )
    })
}

fn cast<T: Real>(x: f64) -> T {
    T::c(x)
}

impl<T: Real> Backend for CpuBackend<T> {
    type Buf = CpuBuf<T>;

    fn name(&self) -> String {
        let gemm = match self.precision {
            Precision::F32 => String::new(),
            Precision::Bf16 => ", bf16 GEMM operands".into(),
        };
        format!(
            "cpu ({}{gemm}, {} threads, {} GEMMs)",
            T::NAME,
            rayon::current_num_threads(),
            gemm_isa()
        )
    }
    fn precision(&self) -> Precision {
        self.precision
    }
    fn zeros(&self, n: usize) -> Result<CpuBuf<T>> {
        let _p = profile::span("zeros");
        Ok(self.pool.filled(n, T::zero()))
    }
    /// A pooled buffer as its last user left it (NaN-filled with `poison_uninit`); a new one is zeroed.
    fn uninit(&self, n: usize) -> Result<CpuBuf<T>> {
        let _p = profile::span("uninit");
        Ok(match self.poison {
            true => self.pool.filled(n, T::nan()),
            false => self.pool.unset(n, T::zero()),
        })
    }
    fn uninit_act(&self, rows: usize, cols: usize) -> Result<CpuBuf<T>> {
        self.uninit(rows * cols)
    }
    fn release_pooled(&self) {
        self.pool.clear();
    }
    /// Allocations (buffers the pool could not serve), memsets (`zeros`), uploads; no launches or
    /// host syncs (there is no device).
    fn counts(&self) -> Option<super::counters::Counts> {
        Some(self.pool.counters.snapshot())
    }
    fn upload(&self, host: &[f32]) -> Result<CpuBuf<T>> {
        let mut buf = self.uninit(host.len())?;
        self.pool.counters.upload_into(pool::words::<T>(host.len()));
        for (d, &x) in buf.iter_mut().zip(host) {
            *d = T::c(f64::from(x));
        }
        Ok(buf)
    }
    fn upload_scalars(&self, dst: &mut CpuBuf<T>, off: usize, host: &[f64]) -> Result<()> {
        let end = off.checked_add(host.len());
        ensure!(
            end.is_some_and(|e| e <= dst.len()),
            "upload_scalars: {} words at {off} into a buffer of {}",
            host.len(),
            dst.len()
        );
        self.pool.counters.upload_into(pool::words::<T>(host.len()));
        for (d, &h) in dst[off..].iter_mut().zip(host) {
            *d = T::c(h);
        }
        Ok(())
    }
    /// The CPU reference runs every step directly (`capture_begin` says `false`), so it has no graph.
    type Graph = std::convert::Infallible;
    fn capture_end(&self) -> Result<Self::Graph> {
        anyhow::bail!("the CPU backend records no graph")
    }
    fn replay(&self, graph: &Self::Graph) -> Result<()> {
        match *graph {}
    }
    fn download(&self, buf: &CpuBuf<T>) -> Result<Vec<f32>> {
        Ok(buf.iter().map(|x| x.d() as f32).collect())
    }
    fn download_f64(&self, buf: &CpuBuf<T>) -> Result<Vec<f64>> {
        Ok(buf.iter().map(|x| x.d()).collect())
    }
    fn buf_len(&self, buf: &CpuBuf<T>) -> usize {
        buf.len()
    }
    fn fill(&self, buf: &mut CpuBuf<T>, off: usize, n: usize, value: f64) -> Result<()> {
        let _p = profile::span("fill");
        ensure!(off + n <= buf.len(), "fill out of bounds");
        pool::fill(&mut buf[off..off + n], T::c(value));
        Ok(())
    }
    fn copy(
        &self,
        dst: &mut CpuBuf<T>,
        dst_off: usize,
        src: &CpuBuf<T>,
        src_off: usize,
        n: usize,
    ) -> Result<()> {
        ensure!(
            dst_off + n <= dst.len() && src_off + n <= src.len(),
            "copy out of bounds"
        );
        dst[dst_off..dst_off + n].copy_from_slice(&src[src_off..src_off + n]);
        Ok(())
    }

    fn patch_embed_im2col(
        &self,
        out: &mut CpuBuf<T>,
        img: &CpuBuf<T>,
        b: usize,
        ch: usize,
        h: usize,
        w: usize,
        p: usize,
    ) -> Result<()> {
        let _p = profile::span("patch_embed_im2col");
        patch_embed::patch_embed_im2col(out, img, b, ch, h, w, p);
        Ok(())
    }
    fn patch_embed_tokens_forward(
        &self,
        x: &mut CpuBuf<T>,
        patch_out: &CpuBuf<T>,
        params: &CpuBuf<T>,
        cls_off: usize,
        pos_off: usize,
        interp: &CpuBuf<T>,
        b: usize,
        p: usize,
        g2: usize,
        c: usize,
    ) -> Result<()> {
        let _p = profile::span("patch_embed_tokens_forward");
        patch_embed::patch_embed_tokens_forward(
            x,
            patch_out,
            &params[cls_off..cls_off + c],
            &params[pos_off..pos_off + (1 + g2) * c],
            interp,
            b,
            p,
            g2,
            c,
        );
        Ok(())
    }
    fn patch_embed_tokens_backward(
        &self,
        dparams: &mut CpuBuf<T>,
        cls_off: usize,
        pos_off: usize,
        dpatch_out: &mut CpuBuf<T>,
        dx: &CpuBuf<T>,
        interp: &CpuBuf<T>,
        b: usize,
        p: usize,
        g2: usize,
        c: usize,
    ) -> Result<()> {
        let _p = profile::span("patch_embed_tokens_backward");
        let mut dcls = dparams[cls_off..cls_off + c].to_vec();
        patch_embed::patch_embed_tokens_backward(
            &mut dcls,
            &mut dparams[pos_off..pos_off + (1 + g2) * c],
            dpatch_out,
            dx,
            interp,
            b,
            p,
            g2,
            c,
        );
        dparams[cls_off..cls_off + c].copy_from_slice(&dcls);
        Ok(())
    }

    fn matmul_forward(
        &self,
        out: &mut CpuBuf<T>,
        inp: &CpuBuf<T>,
        params: &CpuBuf<T>,
        w_off: usize,
        b_off: Option<usize>,
        r: usize,
        i: usize,
        o: usize,
    ) -> Result<()> {
        let _p = profile::gemm("matmul_forward", r, i, o, 1);
        let bias = b_off.map(|bo| &params[bo..bo + o]);
        let w = &params[w_off..w_off + o * i];
        match self.precision {
            Precision::F32 => matmul::matmul_forward(out, inp, w, bias, r, i, o),
            Precision::Bf16 => matmul::matmul_forward_bf16(out, inp, w, bias, r, i, o),
        }
        Ok(())
    }
    fn matmul_forward_full(
        &self,
        out: &mut CpuBuf<T>,
        inp: &CpuBuf<T>,
        params: &CpuBuf<T>,
        w_off: usize,
        b_off: Option<usize>,
        r: usize,
        i: usize,
        o: usize,
    ) -> Result<()> {
        self.at_f32()
            .matmul_forward(out, inp, params, w_off, b_off, r, i, o)
    }
    fn matmul_backward_full(
        &self,
        dinp: Option<&mut CpuBuf<T>>,
        dparams: &mut CpuBuf<T>,
        dw_off: usize,
        db_off: Option<usize>,
        dout: &CpuBuf<T>,
        inp: &CpuBuf<T>,
        params: &CpuBuf<T>,
        w_off: usize,
        r: usize,
        i: usize,
        o: usize,
    ) -> Result<()> {
        self.at_f32().matmul_backward(
            dinp, dparams, dw_off, db_off, dout, inp, params, w_off, r, i, o,
        )
    }
    fn matmul_backward(
        &self,
        dinp: Option<&mut CpuBuf<T>>,
        dparams: &mut CpuBuf<T>,
        dw_off: usize,
        db_off: Option<usize>,
        dout: &CpuBuf<T>,
        inp: &CpuBuf<T>,
        params: &CpuBuf<T>,
        w_off: usize,
        r: usize,
        i: usize,
        o: usize,
    ) -> Result<()> {
        let _p = profile::gemm("matmul_backward", r, i, o, 1 + usize::from(dinp.is_some()));
        let w = &params[w_off..w_off + o * i];
        let dw = &mut dparams[dw_off..dw_off + o * i];
        match self.precision {
            Precision::F32 => {
                if let Some(dinp) = dinp {
                    matmul::matmul_backward_input(dinp, dout, w, r, i, o);
                }
                matmul::matmul_backward_weight(dw, dout, inp, r, i, o);
            }
            Precision::Bf16 => {
                if let Some(dinp) = dinp {
                    matmul::matmul_backward_input_bf16(dinp, dout, w, r, i, o);
                }
                matmul::matmul_backward_weight_bf16(dw, dout, inp, r, i, o);
            }
        }
        if let Some(bo) = db_off {
            matmul::matmul_backward_bias(&mut dparams[bo..bo + o], dout, r, o);
        }
        Ok(())
    }

    fn layernorm_forward(
        &self,
        out: &mut CpuBuf<T>,
        mean: &mut CpuBuf<T>,
        rstd: &mut CpuBuf<T>,
        inp: &CpuBuf<T>,
        params: &CpuBuf<T>,
        w_off: usize,
        b_off: usize,
        r: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        let _p = profile::span("layernorm_forward");
        layernorm::layernorm_forward(
            out,
            mean,
            rstd,
            inp,
            &params[w_off..w_off + c],
            &params[b_off..b_off + c],
            r,
            c,
            cast(eps),
        );
        Ok(())
    }
    fn layernorm_forward_residual(
        &self,
        x: &mut CpuBuf<T>,
        out: &mut CpuBuf<T>,
        mean: &mut CpuBuf<T>,
        rstd: &mut CpuBuf<T>,
        inp: &CpuBuf<T>,
        branch: &CpuBuf<T>,
        scale: &CpuBuf<T>,
        params: &CpuBuf<T>,
        w_off: usize,
        b_off: usize,
        r: usize,
        c: usize,
        n: usize,
        eps: f64,
    ) -> Result<()> {
        let _p = profile::span("layernorm_forward_residual");
        ensure!(
            n > 0 && r.is_multiple_of(n),
            "residual LayerNorm: {r} rows are not whole samples of {n}"
        );
        layernorm::layernorm_forward_residual(
            x,
            out,
            mean,
            rstd,
            inp,
            branch,
            scale,
            &params[w_off..w_off + c],
            &params[b_off..b_off + c],
            r,
            c,
            n,
            cast(eps),
        );
        Ok(())
    }
    fn layernorm_backward(
        &self,
        dinp: &mut CpuBuf<T>,
        dparams: &mut CpuBuf<T>,
        dw_off: usize,
        db_off: usize,
        dout: &CpuBuf<T>,
        inp: &CpuBuf<T>,
        params: &CpuBuf<T>,
        w_off: usize,
        mean: &CpuBuf<T>,
        rstd: &CpuBuf<T>,
        r: usize,
        c: usize,
    ) -> Result<()> {
        let _p = profile::span("layernorm_backward");
        let mut dw = dparams[dw_off..dw_off + c].to_vec();
        let mut db = dparams[db_off..db_off + c].to_vec();
        layernorm::layernorm_backward(
            dinp,
            &mut dw,
            &mut db,
            dout,
            inp,
            &params[w_off..w_off + c],
            mean,
            rstd,
            r,
            c,
        );
        dparams[dw_off..dw_off + c].copy_from_slice(&dw);
        dparams[db_off..db_off + c].copy_from_slice(&db);
        Ok(())
    }

    fn attention_forward(
        &self,
        out: &mut CpuBuf<T>,
        att: &mut CpuBuf<T>,
        qkv: &CpuBuf<T>,
        b: usize,
        n: usize,
        nh: usize,
        hs: usize,
    ) -> Result<()> {
        let _p = profile::span("attention_forward");
        if self.precision.bf16_attention(n, hs) {
            // att holds the row log-sum-exp (B, NH, N) instead of the probabilities.
            attention::attention_forward_bf16(out, att, qkv, b, n, nh, hs);
        } else {
            attention::attention_forward(out, att, qkv, b, n, nh, hs);
        }
        Ok(())
    }
    fn attention_backward(
        &self,
        dqkv: &mut CpuBuf<T>,
        datt: &mut CpuBuf<T>,
        dout: &CpuBuf<T>,
        qkv: &CpuBuf<T>,
        att: &CpuBuf<T>,
        b: usize,
        n: usize,
        nh: usize,
        hs: usize,
    ) -> Result<()> {
        let _p = profile::span("attention_backward");
        if self.precision.bf16_attention(n, hs) {
            attention::attention_backward_bf16(dqkv, dout, qkv, att, b, n, nh, hs);
        } else {
            attention::attention_backward(dqkv, datt, dout, qkv, att, b, n, nh, hs);
        }
        Ok(())
    }

    fn gelu_forward(&self, out: &mut CpuBuf<T>, inp: &CpuBuf<T>, n: usize) -> Result<()> {
        let _p = profile::span("gelu_forward");
        gelu::gelu_forward(&mut out[..n], &inp[..n]);
        Ok(())
    }
    fn gelu_backward(
        &self,
        dinp: &mut CpuBuf<T>,
        dout: &CpuBuf<T>,
        inp: &CpuBuf<T>,
        n: usize,
    ) -> Result<()> {
        let _p = profile::span("gelu_backward");
        gelu::gelu_backward(&mut dinp[..n], &dout[..n], &inp[..n]);
        Ok(())
    }

    fn residual_forward(
        &self,
        out: &mut CpuBuf<T>,
        inp: &CpuBuf<T>,
        branch: &CpuBuf<T>,
        scale: &CpuBuf<T>,
        b: usize,
        m: usize,
    ) -> Result<()> {
        let _p = profile::span("residual_forward");
        residual::residual_forward(out, inp, branch, scale, b, m);
        Ok(())
    }
    fn residual_backward(
        &self,
        dbranch: &mut CpuBuf<T>,
        dout: &CpuBuf<T>,
        scale: &CpuBuf<T>,
        b: usize,
        m: usize,
    ) -> Result<()> {
        let _p = profile::span("residual_backward");
        residual::residual_backward(dbranch, dout, scale, b, m);
        Ok(())
    }
    fn residual_cls_gather(
        &self,
        out: &mut CpuBuf<T>,
        x: &CpuBuf<T>,
        b: usize,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let _p = profile::span("residual_cls_gather");
        residual::residual_cls_gather(out, x, b, n, c);
        Ok(())
    }
    fn residual_cls_scatter(
        &self,
        dx: &mut CpuBuf<T>,
        dout: &CpuBuf<T>,
        b: usize,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let _p = profile::span("residual_cls_scatter");
        residual::residual_cls_scatter(dx, dout, b, n, c);
        Ok(())
    }
    fn residual_copy_cols(
        &self,
        out: &mut CpuBuf<T>,
        inp: &CpuBuf<T>,
        r: usize,
        c: usize,
        tc: usize,
        col_off: usize,
    ) -> Result<()> {
        let _p = profile::span("residual_copy_cols");
        residual::residual_copy_cols(out, inp, r, c, tc, col_off);
        Ok(())
    }

    fn set_mean_forward(
        &self,
        out: &mut CpuBuf<T>,
        inp: &CpuBuf<T>,
        s: usize,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let _p = profile::span("set_mean_forward");
        set_mean::set_mean_forward(out, inp, s, n, c);
        Ok(())
    }
    fn set_mean_backward(
        &self,
        dinp: &mut CpuBuf<T>,
        dout: &CpuBuf<T>,
        s: usize,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let _p = profile::span("set_mean_backward");
        set_mean::set_mean_backward(dinp, dout, s, n, c);
        Ok(())
    }

    fn koleo_forward(
        &self,
        nn: &mut CpuBuf<T>,
        dist: &mut CpuBuf<T>,
        y: &CpuBuf<T>,
        g: usize,
        r: usize,
        c: usize,
    ) -> Result<()> {
        ensure!(r >= 2, "koleo: a group needs at least 2 rows, got {r}");
        let _p = profile::span("koleo_forward");
        koleo::koleo_forward(nn, dist, y, g, r, c);
        Ok(())
    }
    fn koleo_backward(
        &self,
        dinp: &mut CpuBuf<T>,
        loss: &mut CpuBuf<T>,
        nn: &CpuBuf<T>,
        dist: &CpuBuf<T>,
        y: &CpuBuf<T>,
        norm: &CpuBuf<T>,
        g: usize,
        r: usize,
        c: usize,
        weight: f64,
        eps: f64,
    ) -> Result<()> {
        ensure!(r >= 2, "koleo: a group needs at least 2 rows, got {r}");
        let _p = profile::span("koleo_backward");
        koleo::koleo_backward(
            dinp,
            loss,
            nn,
            dist,
            y,
            norm,
            g,
            r,
            c,
            cast(weight),
            cast(eps),
        );
        Ok(())
    }

    fn l2norm_forward(
        &self,
        out: &mut CpuBuf<T>,
        norm: &mut CpuBuf<T>,
        inp: &CpuBuf<T>,
        r: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        let _p = profile::span("l2norm_forward");
        l2norm::l2norm_forward(out, norm, inp, r, c, cast(eps));
        Ok(())
    }
    fn l2norm_backward(
        &self,
        dinp: &mut CpuBuf<T>,
        dout: &CpuBuf<T>,
        out: &CpuBuf<T>,
        norm: &CpuBuf<T>,
        r: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        let _p = profile::span("l2norm_backward");
        l2norm::l2norm_backward(dinp, dout, out, norm, r, c, cast(eps));
        Ok(())
    }

    fn weightnorm_forward(
        &self,
        w: &mut CpuBuf<T>,
        norm: &mut CpuBuf<T>,
        params: &CpuBuf<T>,
        v_off: usize,
        g_off: usize,
        k: usize,
        c: usize,
    ) -> Result<()> {
        let _p = profile::span("weightnorm_forward");
        weightnorm::weightnorm_forward(
            w,
            norm,
            &params[v_off..v_off + k * c],
            &params[g_off..g_off + k],
            k,
            c,
        );
        Ok(())
    }
    fn weightnorm_backward(
        &self,
        dparams: &mut CpuBuf<T>,
        v_off: usize,
        dw: &CpuBuf<T>,
        params: &CpuBuf<T>,
        g_off: usize,
        norm: &CpuBuf<T>,
        k: usize,
        c: usize,
    ) -> Result<()> {
        let _p = profile::span("weightnorm_backward");
        weightnorm::weightnorm_backward(
            &mut dparams[v_off..v_off + k * c],
            dw,
            &params[v_off..v_off + k * c],
            &params[g_off..g_off + k],
            norm,
            k,
            c,
        );
        Ok(())
    }

    fn dino_loss_forward_backward(
        &self,
        loss: &mut CpuBuf<T>,
        dstudent: &mut CpuBuf<T>,
        tprobs: &mut CpuBuf<T>,
        student: &CpuBuf<T>,
        teacher: &CpuBuf<T>,
        center: Option<&CpuBuf<T>>,
        v: usize,
        s: usize,
        k: usize,
        student_temp: f64,
        teacher_temp: DevScalar<CpuBuf<T>>,
    ) -> Result<()> {
        let _p = profile::span("dino_loss_forward_backward");
        let teacher_temp = scalar(teacher_temp, 1, "teacher_temp")?[0].d();
        let center = center.map(|c| c.as_slice());
        ensure!(v >= 2, "the DINO loss needs at least the 2 global views");
        dino_loss::dino_loss_forward_backward(
            loss,
            dstudent,
            tprobs,
            student,
            teacher,
            center,
            v,
            s,
            k,
            student_temp,
            teacher_temp,
        );
        Ok(())
    }
    fn dino_loss_sinkhorn(
        &self,
        tprobs: &mut CpuBuf<T>,
        teacher: &CpuBuf<T>,
        r: usize,
        k: usize,
        teacher_temp: DevScalar<CpuBuf<T>>,
        iters: usize,
    ) -> Result<()> {
        let _p = profile::span("dino_loss_sinkhorn");
        let teacher_temp = scalar(teacher_temp, 1, "teacher_temp")?[0].d();
        ensure!(
            tprobs.len() >= r * k && teacher.len() >= r * k,
            "dino_loss_sinkhorn: buffers shorter than {r} × {k}"
        );
        dino_loss::dino_loss_sinkhorn(tprobs, teacher, r, k, teacher_temp, iters);
        Ok(())
    }
    fn dino_loss_center_update(
        &self,
        center: &mut CpuBuf<T>,
        teacher: &CpuBuf<T>,
        r: usize,
        k: usize,
        momentum: f64,
    ) -> Result<()> {
        let _p = profile::span("dino_loss_center_update");
        dino_loss::dino_loss_center_update(center, teacher, r, k, momentum);
        Ok(())
    }

    fn dino_loss_monitor(
        &self,
        stats: &mut CpuBuf<T>,
        loss: &CpuBuf<T>,
        tprobs: &CpuBuf<T>,
        teacher: &CpuBuf<T>,
        slot: usize,
        rp: usize,
        rt: usize,
        k: usize,
    ) -> Result<()> {
        let _p = profile::span("dino_loss_monitor");
        ensure!(
            stats.len() >= 4 * (slot + 1) && tprobs.len() >= rp * k && teacher.len() >= rt * k,
            "dino_loss_monitor: buffers too small for slot {slot}, {rp}/{rt} rows of {k}"
        );
        dino_loss::dino_loss_monitor(stats, loss, tprobs, teacher, slot, rp, rt, k);
        Ok(())
    }

    fn augment_render(
        &self,
        out: &mut CpuBuf<T>,
        src: &CpuBuf<T>,
        params: &CpuBuf<T>,
        n: usize,
        c: usize,
        crop: usize,
        size: usize,
    ) -> Result<()> {
        let _p = profile::span("augment_render");
        ensure!(params.len() >= n * (8 + 2 * c), "augment params too short");
        augment::augment_render(out, src, params, n, c, crop, size);
        Ok(())
    }
    fn augment_normalize_ntc(
        &self,
        x: &mut CpuBuf<T>,
        stats: &CpuBuf<T>,
        n: usize,
        c: usize,
        hw: usize,
    ) -> Result<()> {
        let _p = profile::span("augment_normalize_ntc");
        augment::augment_normalize_ntc(x, stats, n, c, hw);
        Ok(())
    }
    fn augment_normalize_zscore(
        &self,
        x: &mut CpuBuf<T>,
        n: usize,
        c: usize,
        hw: usize,
    ) -> Result<()> {
        let _p = profile::span("augment_normalize_zscore");
        augment::augment_normalize_zscore(x, n, c, hw);
        Ok(())
    }

    fn reduce_clip_per_tensor(
        &self,
        grads: &mut CpuBuf<T>,
        ranges: &[(usize, usize)],
        max_norm: f64,
    ) -> Result<()> {
        let _p = profile::span("reduce_clip_per_tensor");
        optim::reduce_clip_per_tensor(grads, ranges, max_norm);
        Ok(())
    }
    fn adamw_update(
        &self,
        params: &mut CpuBuf<T>,
        m: &mut CpuBuf<T>,
        v: &mut CpuBuf<T>,
        grads: &CpuBuf<T>,
        lo: usize,
        hi: usize,
        hyper: DevScalar<CpuBuf<T>>,
    ) -> Result<()> {
        let _p = profile::span("adamw_update");
        let hyper = scalar(hyper, ADAMW_WORDS, "adamw hyper")?;
        optim::adamw_update(
            &mut params[lo..hi],
            &mut m[lo..hi],
            &mut v[lo..hi],
            &grads[lo..hi],
            hyper,
        );
        Ok(())
    }
    fn ema_update(
        &self,
        teacher: &mut CpuBuf<T>,
        student: &CpuBuf<T>,
        n: usize,
        momentum: DevScalar<CpuBuf<T>>,
    ) -> Result<()> {
        let _p = profile::span("ema_update");
        let momentum = scalar(momentum, 2, "ema momentum")?;
        optim::ema_update(&mut teacher[..n], &student[..n], momentum);
        Ok(())
    }
}
