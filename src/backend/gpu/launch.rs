//! `Backend` for `GpuBackend<D>`: each op checks its extents, turns (buffer, offset) pairs into device
//! addresses and launches one or more kernels of the matching `kernels/<family>.cu`. The grid of each
//! launch is stated in the kernel file's header; the one-line comments here repeat it.
use super::{Device, GpuBackend, GpuBuf, GpuGraph, KArg, Kernel as K, LaunchCfg};
use crate::backend::{Backend, DType, DevScalar, Precision, ADAMW_WORDS};
use anyhow::{ensure, Result};
use std::sync::Arc;

fn i(n: usize) -> KArg {
    KArg::I32(n as i32)
}
fn f(x: f64) -> KArg {
    KArg::F32(x as f32)
}

/// A `Backend` buffer of `GpuBackend<D>`.
type Buf<D> = GpuBuf<<D as Device>::Mem>;

fn check_extent(len: usize, off: usize, n: usize, what: &str) -> Result<()> {
    ensure!(
        off.checked_add(n).is_some_and(|e| e <= len),
        "{what}: elements {off}..{} outside a buffer of {len}",
        off.saturating_add(n)
    );
    Ok(())
}

impl<D: Device> GpuBackend<D> {
    /// Address of element `off` of the f32 buffer `m`, after checking its type and that `off + n` fits.
    fn at(&self, m: &Buf<D>, off: usize, n: usize, what: &str) -> Result<KArg> {
        self.f32_only(m, what)?;
        check_extent(m.len, off, n, what)?;
        Ok(self.ptr(self.dev.addr(m.mem()) + 4 * off as u64, 4 * n))
    }
    fn at_mut(&self, m: &mut Buf<D>, off: usize, n: usize, what: &str) -> Result<KArg> {
        self.f32_only(m, what)?;
        check_extent(m.len, off, n, what)?;
        Ok(self.ptr(self.dev.addr_mut(m.mem_mut()) + 4 * off as u64, 4 * n))
    }
    /// The kernel argument for device address `addr`, spanning `bytes` (noted for the profile).
    fn ptr(&self, addr: u64, bytes: usize) -> KArg {
        self.note_extent(addr, bytes as u64);
        KArg::Ptr(addr)
    }
    fn f32_only(&self, m: &Buf<D>, what: &str) -> Result<()> {
        ensure!(
            m.dtype == DType::F32,
            "{what}: a {} buffer was passed where this kernel reads or writes f32",
            m.dtype.name()
        );
        Ok(())
    }
    /// The LayerNorm output argument and whether it is stored in bf16.
    fn ln_out(&self, out: &mut Buf<D>, n: usize) -> Result<(KArg, bool)> {
        Ok(match out.dtype {
            DType::F32 | DType::U16 => (self.at_mut(out, 0, n, "ln out")?, false),
            DType::Bf16 => (self.at_bf16_mut(out, n, "ln out")?, true),
        })
    }
    /// Address of the bf16 buffer `m` (element 0), after checking its type and that `n` elements fit.
    fn at_bf16(&self, m: &Buf<D>, n: usize, what: &str) -> Result<KArg> {
        ensure!(m.dtype == DType::Bf16, "{what}: expected a bf16 buffer");
        check_extent(m.len, 0, n, what)?;
        Ok(self.ptr(self.dev.addr(m.mem()), 2 * n))
    }
    fn at_bf16_mut(&self, m: &mut Buf<D>, n: usize, what: &str) -> Result<KArg> {
        ensure!(m.dtype == DType::Bf16, "{what}: expected a bf16 buffer");
        check_extent(m.len, 0, n, what)?;
        Ok(self.ptr(self.dev.addr_mut(m.mem_mut()), 2 * n))
    }
    /// Address of element `off` of a scratch (raw f32 word) buffer.
    fn raw_at(&self, m: &D::Mem, off: usize, n: usize, what: &str) -> Result<KArg> {
        check_extent(self.dev.mem_len(m), off, n, what)?;
        Ok(self.ptr(self.dev.addr(m) + 4 * off as u64, 4 * n))
    }
    fn raw_at_mut(&self, m: &mut D::Mem, off: usize, n: usize, what: &str) -> Result<KArg> {
        check_extent(self.dev.mem_len(m), off, n, what)?;
        Ok(self.ptr(self.dev.addr_mut(m) + 4 * off as u64, 4 * n))
    }
    /// A (rows, cols) activation buffer (`zeros_act`), zeroed or not (`uninit_act`).
    fn act_buf(&self, rows: usize, cols: usize, zero: bool) -> Result<Buf<D>> {
        let n = rows * cols;
        if self.precision != Precision::Bf16 || !cols.is_multiple_of(8) {
            return Ok(self.f32_buf(self.alloc_for(n, zero)?));
        }
        Ok(GpuBuf {
            mem: Some(self.alloc_for(n.div_ceil(2).max(1), zero)?),
            dtype: DType::Bf16,
            len: n,
            bf16: None,
            home: std::sync::Arc::downgrade(&self.pool),
        })
    }
    fn f32_buf(&self, mem: D::Mem) -> Buf<D> {
        let len = self.dev.mem_len(&mem);
        GpuBuf {
            mem: Some(mem),
            dtype: DType::F32,
            len,
            bf16: None,
            home: std::sync::Arc::downgrade(&self.pool),
        }
    }
    fn go(&self, k: K, cfg: LaunchCfg, args: &[KArg]) -> Result<()> {
        self.counters.launch();
        if !self.profiling.load(std::sync::atomic::Ordering::Relaxed) {
            return self.dev.launch(k, cfg, args);
        }
        let start = self.dev.mark()?;
        self.dev.launch(k, cfg, args)?;
        let end = self.dev.mark()?;
        let ctas = cfg.grid.iter().map(|&g| u64::from(g)).product();
        let ptrs = args.iter().filter_map(|a| match *a {
            KArg::Ptr(p) => Some(p),
            _ => None,
        });
        let mut p = self
            .profiler
            .lock()
            .map_err(|_| anyhow::anyhow!("profiler poisoned"))?;
        if let Some(p) = p.as_mut() {
            let rec = p.record(k, ctas, ptrs);
            p.launches.push((rec, start.zip(end)));
        }
        Ok(())
    }
    /// Device table of (offset, len) pairs as i32 bit patterns in an f32 buffer (uploaded once per table).
    fn range_table(&self, ranges: &[(usize, usize)]) -> Result<Arc<D::Mem>> {
        let mut cache = self
            .range_cache
            .lock()
            .map_err(|_| anyhow::anyhow!("range cache poisoned"))?;
        if let Some((_, m)) = cache.iter().find(|(r, _)| r == ranges) {
            return Ok(m.clone());
        }
        let mut host = Vec::with_capacity(2 * ranges.len());
        for &(o, l) in ranges {
            ensure!(
                o + l <= i32::MAX as usize,
                "tensor range beyond 2^31 elements"
            );
            host.push(f32::from_bits(o as u32));
            host.push(f32::from_bits(l as u32));
        }
        let m = Arc::new(self.htod(&host)?);
        cache.push((ranges.to_vec(), m.clone()));
        Ok(m)
    }
}

impl<D: Device> Backend for GpuBackend<D> {
    type Buf = Buf<D>;

    fn name(&self) -> String {
        match self.precision {
            Precision::F32 => self.dev.describe(),
            Precision::Bf16 => format!("{}, bf16 tensor-core GEMMs", self.dev.describe()),
        }
    }
    fn precision(&self) -> Precision {
        self.precision
    }
    fn zeros(&self, n: usize) -> Result<Buf<D>> {
        Ok(self.f32_buf(self.alloc(n)?))
    }
    fn uninit(&self, n: usize) -> Result<Buf<D>> {
        Ok(self.f32_buf(self.alloc_for(n, false)?))
    }
    fn zeros_act(&self, rows: usize, cols: usize) -> Result<Buf<D>> {
        self.act_buf(rows, cols, true)
    }
    fn uninit_act(&self, rows: usize, cols: usize) -> Result<Buf<D>> {
        self.act_buf(rows, cols, false)
    }
    fn dtype(&self, buf: &Buf<D>) -> DType {
        buf.dtype
    }
    fn keep_bf16_copy(&self, params: &mut Buf<D>) -> Result<()> {
        if self.precision != Precision::Bf16 || params.bf16.is_some() {
            return Ok(());
        }
        self.f32_only(params, "bf16 weight copy")?;
        params.bf16 = Some(self.alloc(params.len.div_ceil(2).max(1))?);
        self.refresh_bf16_copy(params, 0, params.len)
    }
    fn release_pooled(&self) {
        self.pool.clear();
    }
    fn settle_arena(&self) -> Result<()> {
        GpuBackend::settle_arena(self).map(|_| ())
    }
    fn is_device(&self) -> bool {
        true
    }
    fn counts(&self) -> Option<crate::backend::counters::Counts> {
        Some(self.counters.snapshot())
    }
    fn upload(&self, host: &[f32]) -> Result<Buf<D>> {
        Ok(self.f32_buf(self.htod(host)?))
    }
    fn upload_scalars(&self, dst: &mut Buf<D>, off: usize, host: &[f64]) -> Result<()> {
        self.f32_only(dst, "scalar buffer")?;
        check_extent(dst.len, off, host.len(), "upload_scalars")?;
        self.not_capturing("uploads", host.len())?;
        let words: Vec<f32> = host.iter().map(|&v| v as f32).collect();
        self.counters.upload_into(words.len());
        self.dev.htod_into(&words, dst.mem_mut(), off)
    }
    type Graph = GpuGraph<D>;
    fn capture_begin(&self) -> Result<bool> {
        let mut c = self
            .capture
            .lock()
            .map_err(|_| anyhow::anyhow!("capture state poisoned"))?;
        ensure!(c.is_none(), "a graph capture is already under way");
        self.dev.capture_begin()?;
        *c = Some((Vec::new(), self.counters.snapshot()));
        Ok(true)
    }
    fn capture_end(&self) -> Result<GpuGraph<D>> {
        let (taken, before) = self
            .capture
            .lock()
            .map_err(|_| anyhow::anyhow!("capture state poisoned"))?
            .take()
            .ok_or_else(|| anyhow::anyhow!("capture_end without capture_begin"))?;
        let graph = self.dev.capture_end()?;
        let recorded = self.counters.snapshot().since(before);
        ensure!(
            recorded.allocs == 0 && recorded.uploads == 0 && recorded.host_syncs == 0,
            "the captured work allocated ({}), uploaded ({}) or waited ({}): not replayable",
            recorded.allocs,
            recorded.uploads,
            recorded.host_syncs
        );
        let used = |m: &D::Mem| taken.contains(&self.dev.addr(m));
        let mut arena = self.pool.take_where(used);
        if let Ok(mut scratch) = self.scratch.lock() {
            let (mine, rest): (Vec<_>, Vec<_>) = scratch.drain(..).partition(|m| used(m));
            *scratch = rest;
            arena.extend(mine);
        }
        Ok(GpuGraph {
            graph,
            arena,
            recorded,
        })
    }
    fn replay(&self, g: &GpuGraph<D>) -> Result<()> {
        self.not_capturing("replays a graph", 0)?;
        self.counters.graph_launch();
        self.dev.replay(&g.graph)
    }
    fn upload_u16(&self, host: &[u16]) -> Result<Buf<D>> {
        // two values per word, the lower index in the low half (the bf16 layout)
        let words: Vec<f32> = host
            .chunks(2)
            .map(|p| {
                let hi = p.get(1).copied().map_or(0, u32::from);
                f32::from_bits(u32::from(p[0]) | (hi << 16))
            })
            .collect();
        Ok(GpuBuf {
            mem: Some(self.htod(&words)?),
            dtype: DType::U16,
            len: host.len(),
            bf16: None,
            home: std::sync::Arc::downgrade(&self.pool),
        })
    }
    fn upload_step_inputs(&self, cells: &[u16], parts: &[&[f32]]) -> Result<(Buf<D>, Vec<Buf<D>>)> {
        let sizes: Vec<usize> = std::iter::once(cells.len().div_ceil(2))
            .chain(parts.iter().map(|p| p.len()))
            .collect();
        let total: usize = sizes.iter().sum();
        self.not_capturing("uploads", total)?;
        let slot = self
            .input_slot
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % 2;
        let pool = &self.input_pools[slot];
        let len = |m: &D::Mem| self.dev.mem_len(m);
        let mut mems: Vec<Option<D::Mem>> = sizes
            .iter()
            .map(|&n| pool.take_exact(n.max(1), len))
            .collect();
        let fresh = mems.iter().any(Option::is_none);
        if fresh {
            pool.clear(); // blocks of other sizes: this slot keeps one set
        }
        let mut mems = mems
            .iter_mut()
            .zip(&sizes)
            .map(|(m, &n)| match m.take() {
                Some(m) => Ok(m),
                None => {
                    self.counters.alloc_zeroed(n.max(1));
                    self.dev.alloc_zeros(n.max(1)) // an empty part keeps one word, as looked up
                }
            })
            .collect::<Result<Vec<_>>>()?;
        // The transfer: the cells two per word (the lower index in the low half), then each part.
        let mut fill = |host: &mut [f32]| {
            let (packed, mut rest) = host.split_at_mut(sizes[0]);
            for (w, p) in packed.iter_mut().zip(cells.chunks(2)) {
                let hi = p.get(1).copied().map_or(0, u32::from);
                *w = f32::from_bits(u32::from(p[0]) | (hi << 16));
            }
            for p in parts {
                let (head, tail) = rest.split_at_mut(p.len());
                head.copy_from_slice(p);
                rest = tail;
            }
        };
        let mut at = 0;
        let mut dsts = Vec::with_capacity(mems.len());
        for (m, &n) in mems.iter_mut().zip(&sizes) {
            if n > 0 {
                dsts.push((m, at, n));
            }
            at += n;
        }
        self.counters.upload_into(total);
        self.dev
            .upload_staged(slot, total, &mut fill, &mut dsts, fresh)?;
        let home = std::sync::Arc::downgrade(pool);
        let mut bufs = mems.into_iter().zip(
            std::iter::once((DType::U16, cells.len()))
                .chain(parts.iter().map(|p| (DType::F32, p.len()))),
        );
        let mut next = || {
            bufs.next().map(|(m, (dtype, len))| GpuBuf {
                mem: Some(m),
                dtype,
                len,
                bf16: None,
                home: home.clone(),
            })
        };
        let cells_buf = next().ok_or_else(|| anyhow::anyhow!("no cell buffer"))?;
        let parts = std::iter::from_fn(next).collect();
        Ok((cells_buf, parts))
    }
    fn download(&self, buf: &Buf<D>) -> Result<Vec<f32>> {
        let words = self.dtoh_synced(buf.mem())?;
        Ok(match buf.dtype {
            DType::F32 => words,
            DType::Bf16 => unpack_bf16(&words, buf.len),
            DType::U16 => (0..buf.len)
                .map(|k| {
                    let w = words[k / 2].to_bits();
                    (if k % 2 == 0 { w & 0xffff } else { w >> 16 }) as f32
                })
                .collect(),
        })
    }
    fn buf_len(&self, buf: &Buf<D>) -> usize {
        buf.len
    }
    fn fill(&self, buf: &mut Buf<D>, off: usize, n: usize, value: f64) -> Result<()> {
        // reduce_fill_f32: one thread per element
        let p = self.at_mut(buf, off, n, "fill")?;
        self.go(
            K::reduce_fill_f32,
            LaunchCfg::linear(n),
            &[p, f(value), i(n)],
        )?;
        self.refresh_bf16_copy(buf, off, n)
    }
    fn copy(
        &self,
        dst: &mut Buf<D>,
        dst_off: usize,
        src: &Buf<D>,
        src_off: usize,
        n: usize,
    ) -> Result<()> {
        self.f32_only(dst, "copy destination")?;
        self.f32_only(src, "copy source")?;
        check_extent(dst.len, dst_off, n, "copy destination")?;
        check_extent(src.len, src_off, n, "copy source")?;
        self.counters.copy();
        self.dev
            .copy_d2d(dst.mem_mut(), dst_off, src.mem(), src_off, n)?;
        self.refresh_bf16_copy(dst, dst_off, n)
    }

    fn patch_embed_im2col(
        &self,
        out: &mut Buf<D>,
        img: &Buf<D>,
        b: usize,
        ch: usize,
        h: usize,
        w: usize,
        p: usize,
    ) -> Result<()> {
        let n = b * (h / p) * (w / p) * ch * p * p;
        let o = self.at_mut(out, 0, n, "im2col out")?;
        let x = self.at(img, 0, b * ch * h * w, "im2col img")?;
        // one thread per output element
        self.go(
            K::patch_embed_im2col_f32,
            LaunchCfg::linear(n),
            &[o, x, i(b), i(ch), i(h), i(w), i(p)],
        )
    }
    fn patch_embed_tokens_forward(
        &self,
        x: &mut Buf<D>,
        patch_out: &Buf<D>,
        params: &Buf<D>,
        cls_off: usize,
        pos_off: usize,
        interp: &Buf<D>,
        b: usize,
        p: usize,
        g2: usize,
        c: usize,
    ) -> Result<()> {
        let n = b * (1 + p) * c;
        let args = [
            self.at_mut(x, 0, n, "tokens x")?,
            self.at(patch_out, 0, b * p * c, "tokens patch_out")?,
            self.at(params, cls_off, c, "cls_token")?,
            self.at(params, pos_off, (1 + g2) * c, "pos_embed")?,
            self.at(interp, 0, p * g2, "interp")?,
            i(b),
            i(p),
            i(g2),
            i(c),
        ];
        // one thread per element of x
        self.go(
            K::patch_embed_tokens_forward_f32,
            LaunchCfg::linear(n),
            &args,
        )
    }
    fn patch_embed_tokens_backward(
        &self,
        dparams: &mut Buf<D>,
        cls_off: usize,
        pos_off: usize,
        dpatch_out: &mut Buf<D>,
        dx: &Buf<D>,
        interp: &Buf<D>,
        b: usize,
        p: usize,
        g2: usize,
        c: usize,
    ) -> Result<()> {
        let n = 1 + p;
        let dxa = self.at(dx, 0, b * n * c, "tokens dx")?;
        let dpa = self.at_mut(dpatch_out, 0, b * p * c, "tokens dpatch_out")?;
        // one thread per element of dpatch_out
        self.go(
            K::patch_embed_tokens_backward_patch_f32,
            LaunchCfg::linear(b * p * c),
            &[dpa, dxa, i(b), i(p), i(c)],
        )?;
        // written whole (=) by the sum kernel; back to the pool when dropped
        let mut sum = self.f32_buf(self.alloc_for(n * c, false)?);
        let sa = self.raw_at_mut(sum.mem_mut(), 0, n * c, "tokens sum")?;
        // one thread per (token, channel): sum over images in order
        self.go(
            K::patch_embed_tokens_backward_sum_f32,
            LaunchCfg::linear(n * c),
            &[sa, dxa, i(b), i(n), i(c)],
        )?;
        let args = [
            self.at_mut(dparams, cls_off, c, "dcls")?,
            self.at_mut(dparams, pos_off, (1 + g2) * c, "dpos")?,
            self.raw_at(sum.mem(), 0, n * c, "tokens sum")?,
            self.at(interp, 0, p * g2, "interp")?,
            i(p),
            i(g2),
            i(c),
        ];
        // one thread per element of pos_embed
        self.go(
            K::patch_embed_tokens_backward_params_f32,
            LaunchCfg::linear((1 + g2) * c),
            &args,
        )
    }

    fn matmul_forward(
        &self,
        out: &mut Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        b_off: Option<usize>,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        self.matmul_forward_at(self.precision, out, inp, params, w_off, b_off, r, ii, o)
    }
    fn matmul_forward_full(
        &self,
        out: &mut Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        b_off: Option<usize>,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        self.matmul_forward_at(Precision::F32, out, inp, params, w_off, b_off, r, ii, o)
    }
    fn matmul_backward_full(
        &self,
        dinp: Option<&mut Buf<D>>,
        dparams: &mut Buf<D>,
        dw_off: usize,
        db_off: Option<usize>,
        dout: &Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        self.matmul_backward_at(
            Precision::F32,
            dinp,
            dparams,
            dw_off,
            db_off,
            dout,
            inp,
            params,
            w_off,
            r,
            ii,
            o,
        )
    }
    fn matmul_backward(
        &self,
        dinp: Option<&mut Buf<D>>,
        dparams: &mut Buf<D>,
        dw_off: usize,
        db_off: Option<usize>,
        dout: &Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        self.matmul_backward_at(
            self.precision,
            dinp,
            dparams,
            dw_off,
            db_off,
            dout,
            inp,
            params,
            w_off,
            r,
            ii,
            o,
        )
    }
    fn matmul_forward_gelu(
        &self,
        pre: &mut Buf<D>,
        act: &mut Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        b_off: usize,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        if self.precision != Precision::Bf16 {
            self.matmul_forward(pre, inp, params, w_off, Some(b_off), r, ii, o)?;
            return self.gelu_forward(act, pre, r * o);
        }
        let y = self.at_mut(pre, 0, r * o, "matmul pre")?;
        let (g, g16) = match act.dtype {
            DType::F32 | DType::U16 => (self.at_mut(act, 0, r * o, "matmul act")?, KArg::Ptr(0)),
            DType::Bf16 => (KArg::Ptr(0), self.at_bf16_mut(act, r * o, "matmul act")?),
        };
        let bias = self.at(params, b_off, o, "bias")?;
        self.with_bf16_x_w(inp, params, w_off, r, ii, o, |x, w| {
            // grid (CEIL_DIV(O,64), CEIL_DIV(R,BM)), block 2·BM (gemm_tile_rows); bias + GELU in the epilogue
            let args = [y, g, g16, x, w, bias, i(r), i(ii), i(o)];
            self.note_flop(gemm_flop(r, ii, o));
            self.go(K::matmul_forward_gelu_bf16, self.gemm_tiles(o, r), &args)
        })
    }
    fn matmul_forward_residual(
        &self,
        out: &mut Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        b_off: usize,
        resid: &Buf<D>,
        scale: &Buf<D>,
        r: usize,
        ii: usize,
        o: usize,
        n: usize,
    ) -> Result<()> {
        ensure!(
            n > 0 && r.is_multiple_of(n),
            "residual GEMM: {r} rows are not whole samples of {n}"
        );
        if self.precision != Precision::Bf16 {
            let mut branch = self.uninit(r * o)?; // written whole (=) by the GEMM
            self.matmul_forward(&mut branch, inp, params, w_off, Some(b_off), r, ii, o)?;
            return self.residual_forward(out, resid, &branch, scale, r / n, n * o);
        }
        let y = self.at_mut(out, 0, r * o, "matmul out")?;
        let bias = self.at(params, b_off, o, "bias")?;
        let res = self.at(resid, 0, r * o, "matmul resid")?;
        let sc = self.at(scale, 0, r / n, "matmul scale")?;
        self.with_bf16_x_w(inp, params, w_off, r, ii, o, |x, w| {
            // grid (CEIL_DIV(O,64), CEIL_DIV(R,BM)), block 2·BM (gemm_tile_rows); bias, scale and residual in the epilogue
            let args = [y, x, w, bias, res, sc, i(r), i(ii), i(o), i(n)];
            self.note_flop(gemm_flop(r, ii, o));
            self.go(
                K::matmul_forward_residual_bf16,
                self.gemm_tiles(o, r),
                &args,
            )
        })
    }
    fn layernorm_forward(
        &self,
        out: &mut Buf<D>,
        mean: &mut Buf<D>,
        rstd: &mut Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        b_off: usize,
        r: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        let (o, k) = self.ln_out(out, r * c)?;
        let args = [
            o,
            self.at_mut(mean, 0, r, "ln mean")?,
            self.at_mut(rstd, 0, r, "ln rstd")?,
            self.at(inp, 0, r * c, "ln inp")?,
            self.at(params, w_off, c, "ln weight")?,
            self.at(params, b_off, c, "ln bias")?,
            i(r),
            i(c),
            f(eps),
        ];
        // one warp per row, 8 rows per block of 256
        let k = if k {
            K::layernorm_forward_bf16
        } else {
            K::layernorm_forward_f32
        };
        self.go(k, LaunchCfg::warp_per_row(r), &args)
    }
    fn layernorm_forward_residual(
        &self,
        x: &mut Buf<D>,
        out: &mut Buf<D>,
        mean: &mut Buf<D>,
        rstd: &mut Buf<D>,
        inp: &Buf<D>,
        branch: &Buf<D>,
        scale: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        b_off: usize,
        r: usize,
        c: usize,
        n: usize,
        eps: f64,
    ) -> Result<()> {
        ensure!(
            n > 0 && r.is_multiple_of(n),
            "residual LayerNorm: {r} rows are not whole samples of {n}"
        );
        let (o, k) = self.ln_out(out, r * c)?;
        let args = [
            self.at_mut(x, 0, r * c, "ln x")?,
            o,
            self.at_mut(mean, 0, r, "ln mean")?,
            self.at_mut(rstd, 0, r, "ln rstd")?,
            self.at(inp, 0, r * c, "ln inp")?,
            self.at(branch, 0, r * c, "ln branch")?,
            self.at(scale, 0, r / n, "ln scale")?,
            self.at(params, w_off, c, "ln weight")?,
            self.at(params, b_off, c, "ln bias")?,
            i(r),
            i(c),
            i(n),
            f(eps),
        ];
        // one warp per row, 8 rows per block of 256
        let k = if k {
            K::layernorm_forward_residual_bf16
        } else {
            K::layernorm_forward_residual_f32
        };
        self.go(k, LaunchCfg::warp_per_row(r), &args)
    }
    fn layernorm_backward(
        &self,
        dinp: &mut Buf<D>,
        dparams: &mut Buf<D>,
        dw_off: usize,
        db_off: usize,
        dout: &Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        mean: &Buf<D>,
        rstd: &Buf<D>,
        r: usize,
        c: usize,
    ) -> Result<()> {
        let dy = self.at(dout, 0, r * c, "ln dout")?;
        let x = self.at(inp, 0, r * c, "ln inp")?;
        let mu = self.at(mean, 0, r, "ln mean")?;
        let rs = self.at(rstd, 0, r, "ln rstd")?;
        let args = [
            self.at_mut(dinp, 0, r * c, "ln dinp")?,
            dy,
            x,
            self.at(params, w_off, c, "ln weight")?,
            mu,
            rs,
            i(r),
            i(c),
        ];
        // one warp per row
        self.go(K::layernorm_backward_f32, LaunchCfg::warp_per_row(r), &args)?;
        let nb = r.div_ceil(LN_PARAM_ROWS).max(1);
        let mut partial = self.take(2 * nb * c)?;
        let pa = self.raw_at_mut(&mut partial, 0, 2 * nb * c, "ln param partial")?;
        let cfg = LaunchCfg {
            grid: [c.div_ceil(32) as u32, nb as u32, 1],
            block: [32, 8, 1],
            smem: 0,
        };
        // grid (CEIL_DIV(C,32), CEIL_DIV(R,256)), block (32,8): per-block partial sums
        let res = self
            .go(
                K::layernorm_backward_params_partial_f32,
                cfg,
                &[pa, dy, x, mu, rs, i(r), i(c)],
            )
            .and_then(|_| {
                let args = [
                    self.at_mut(dparams, dw_off, c, "ln dweight")?,
                    self.at_mut(dparams, db_off, c, "ln dbias")?,
                    pa,
                    i(nb),
                    i(c),
                ];
                // one thread per column: the blocks in order
                self.go(
                    K::layernorm_backward_params_final_f32,
                    LaunchCfg::linear(c),
                    &args,
                )
            });
        self.give(partial);
        res
    }

    fn attention_forward(
        &self,
        out: &mut Buf<D>,
        att: &mut Buf<D>,
        qkv: &Buf<D>,
        b: usize,
        n: usize,
        nh: usize,
        hs: usize,
    ) -> Result<()> {
        let c = nh * hs;
        if self.precision.bf16_attention(n, hs) {
            let smem = attention_smem(n, hs, false)?;
            let (o, o16) = match out.dtype {
                DType::F32 | DType::U16 => {
                    (self.at_mut(out, 0, b * n * c, "attn out")?, KArg::Ptr(0))
                }
                DType::Bf16 => (KArg::Ptr(0), self.at_bf16_mut(out, b * n * c, "attn out")?),
            };
            let args = [
                o,
                o16,
                self.at_mut(att, 0, b * nh * n, "attn lse")?,
                self.at(qkv, 0, b * n * 3 * c, "attn qkv")?,
                i(b),
                i(n),
                i(nh),
                i(hs),
            ];
            // one CTA of 4 warps per image, all heads; dynamic smem 3·NP·(HP+8)·2 B
            self.note_flop(4.0 * (b * n * n * c) as f64);
            return self.go(K::attention_forward_bf16, attention_cfg(b, smem), &args);
        }
        if out.dtype == DType::Bf16 {
            // the f32 kernel writes f32: into scratch, then rounded into the bf16 activation
            let mut tmp = self.zeros(b * n * c)?;
            self.attention_forward(&mut tmp, att, qkv, b, n, nh, hs)?;
            return self.round_into(out, &tmp, b * n * c);
        }
        let args = [
            self.at_mut(out, 0, b * n * c, "attn out")?,
            self.at_mut(att, 0, b * nh * n * n, "attn att")?,
            self.at(qkv, 0, b * n * 3 * c, "attn qkv")?,
            i(b),
            i(n),
            i(nh),
            i(hs),
        ];
        // one thread per (image, head, query row)
        self.note_flop(4.0 * (b * n * n * c) as f64);
        self.go(
            K::attention_forward_f32,
            LaunchCfg::linear(b * nh * n),
            &args,
        )
    }
    fn attention_backward(
        &self,
        dqkv: &mut Buf<D>,
        datt: &mut Buf<D>,
        dout: &Buf<D>,
        qkv: &Buf<D>,
        att: &Buf<D>,
        b: usize,
        n: usize,
        nh: usize,
        hs: usize,
    ) -> Result<()> {
        let c = nh * hs;
        let dy = self.at(dout, 0, b * n * c, "attn dout")?;
        let x = self.at(qkv, 0, b * n * 3 * c, "attn qkv")?;
        if self.precision.bf16_attention(n, hs) {
            let smem = attention_smem(n, hs, true)?;
            let args = [
                self.at_mut(dqkv, 0, b * n * 3 * c, "attn dqkv")?,
                dy,
                x,
                self.at(att, 0, b * nh * n, "attn lse")?,
                i(b),
                i(n),
                i(nh),
                i(hs),
            ];
            // one CTA of 4 warps per image, all heads; dynamic smem (4·NP·(HP+8) + 2·NP·(NP+8))·2 B
            self.note_flop(8.0 * (b * n * n * c) as f64);
            return self.go(K::attention_backward_bf16, attention_cfg(b, smem), &args);
        }
        let a = self.at(att, 0, b * nh * n * n, "attn att")?;
        let args = [
            self.at_mut(datt, 0, b * nh * n * n, "attn datt")?,
            dy,
            x,
            a,
            i(b),
            i(n),
            i(nh),
            i(hs),
        ];
        // one thread per (image, head, query row): the softmax-input gradient
        self.note_flop(2.0 * (b * n * n * c) as f64);
        self.go(
            K::attention_backward_datt_f32,
            LaunchCfg::linear(b * nh * n),
            &args,
        )?;
        let args = [
            self.at_mut(dqkv, 0, b * n * 3 * c, "attn dqkv")?,
            self.at(datt, 0, b * nh * n * n, "attn datt")?,
            dy,
            x,
            a,
            i(b),
            i(n),
            i(nh),
            i(hs),
        ];
        // one thread per element of dqkv
        self.note_flop(6.0 * (b * n * n * c) as f64);
        self.go(
            K::attention_backward_dqkv_f32,
            LaunchCfg::linear(b * n * 3 * c),
            &args,
        )
    }

    fn gelu_forward(&self, out: &mut Buf<D>, inp: &Buf<D>, n: usize) -> Result<()> {
        let args = [
            self.at_mut(out, 0, n, "gelu out")?,
            self.at(inp, 0, n, "gelu inp")?,
            i(n),
        ];
        self.go(K::gelu_forward_f32, LaunchCfg::linear(n), &args)
    }
    fn gelu_backward(
        &self,
        dinp: &mut Buf<D>,
        dout: &Buf<D>,
        inp: &Buf<D>,
        n: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(dinp, 0, n, "gelu dinp")?,
            self.at(dout, 0, n, "gelu dout")?,
            self.at(inp, 0, n, "gelu inp")?,
            i(n),
        ];
        self.go(K::gelu_backward_f32, LaunchCfg::linear(n), &args)
    }

    fn residual_forward(
        &self,
        out: &mut Buf<D>,
        inp: &Buf<D>,
        branch: &Buf<D>,
        scale: &Buf<D>,
        b: usize,
        m: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(out, 0, b * m, "res out")?,
            self.at(inp, 0, b * m, "res inp")?,
            self.at(branch, 0, b * m, "res branch")?,
            self.at(scale, 0, b, "res scale")?,
            i(b),
            i(m),
        ];
        self.go(K::residual_forward_f32, LaunchCfg::linear(b * m), &args)
    }
    fn residual_backward(
        &self,
        dbranch: &mut Buf<D>,
        dout: &Buf<D>,
        scale: &Buf<D>,
        b: usize,
        m: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(dbranch, 0, b * m, "res dbranch")?,
            self.at(dout, 0, b * m, "res dout")?,
            self.at(scale, 0, b, "res scale")?,
            i(b),
            i(m),
        ];
        self.go(K::residual_backward_f32, LaunchCfg::linear(b * m), &args)
    }
    fn residual_cls_gather(
        &self,
        out: &mut Buf<D>,
        x: &Buf<D>,
        b: usize,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(out, 0, b * c, "cls out")?,
            self.at(x, 0, b * n * c, "cls x")?,
            i(b),
            i(n),
            i(c),
        ];
        self.go(K::residual_cls_gather_f32, LaunchCfg::linear(b * c), &args)
    }
    fn residual_cls_scatter(
        &self,
        dx: &mut Buf<D>,
        dout: &Buf<D>,
        b: usize,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(dx, 0, b * n * c, "cls dx")?,
            self.at(dout, 0, b * c, "cls dout")?,
            i(b),
            i(n),
            i(c),
        ];
        self.go(
            K::residual_cls_scatter_f32,
            LaunchCfg::linear(b * n * c),
            &args,
        )
    }
    fn residual_copy_cols(
        &self,
        out: &mut Buf<D>,
        inp: &Buf<D>,
        r: usize,
        c: usize,
        tc: usize,
        col_off: usize,
    ) -> Result<()> {
        ensure!(
            col_off + c <= tc,
            "copy_cols: columns {col_off}..{} outside {tc}",
            col_off + c
        );
        let args = [
            self.at_mut(out, 0, r * tc, "cols out")?,
            self.at(inp, 0, r * c, "cols inp")?,
            i(r),
            i(c),
            i(tc),
            i(col_off),
        ];
        self.go(K::residual_copy_cols_f32, LaunchCfg::linear(r * c), &args)
    }

    fn set_mean_forward(
        &self,
        out: &mut Buf<D>,
        inp: &Buf<D>,
        s: usize,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(out, 0, s * c, "set_mean out")?,
            self.at(inp, 0, s * n * c, "set_mean inp")?,
            i(s),
            i(n),
            i(c),
        ];
        self.go(K::set_mean_forward_f32, LaunchCfg::linear(s * c), &args)
    }
    fn set_mean_backward(
        &self,
        dinp: &mut Buf<D>,
        dout: &Buf<D>,
        s: usize,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(dinp, 0, s * n * c, "set_mean dinp")?,
            self.at(dout, 0, s * c, "set_mean dout")?,
            i(s),
            i(n),
            i(c),
        ];
        self.go(
            K::set_mean_backward_f32,
            LaunchCfg::linear(s * n * c),
            &args,
        )
    }

    fn koleo_forward(
        &self,
        nn: &mut Buf<D>,
        dist: &mut Buf<D>,
        y: &Buf<D>,
        g: usize,
        r: usize,
        c: usize,
    ) -> Result<()> {
        ensure!(r >= 2, "koleo: a group needs at least 2 rows, got {r}");
        let args = [
            self.at_mut(nn, 0, g * r, "koleo nn")?,
            self.at_mut(dist, 0, g * r, "koleo dist")?,
            self.at(y, 0, g * r * c, "koleo y")?,
            i(g),
            i(r),
            i(c),
        ];
        self.go(K::koleo_forward_f32, LaunchCfg::warp_per_row(g * r), &args)
    }
    fn koleo_backward(
        &self,
        dinp: &mut Buf<D>,
        loss: &mut Buf<D>,
        nn: &Buf<D>,
        dist: &Buf<D>,
        y: &Buf<D>,
        norm: &Buf<D>,
        g: usize,
        r: usize,
        c: usize,
        weight: f64,
        eps: f64,
    ) -> Result<()> {
        ensure!(r >= 2, "koleo: a group needs at least 2 rows, got {r}");
        let args = [
            self.at_mut(dinp, 0, g * r * c, "koleo dinp")?,
            self.at_mut(loss, 0, 1, "koleo loss")?,
            self.at(nn, 0, g * r, "koleo nn")?,
            self.at(dist, 0, g * r, "koleo dist")?,
            self.at(y, 0, g * r * c, "koleo y")?,
            self.at(norm, 0, g * r, "koleo norm")?,
            i(g),
            i(r),
            i(c),
            f(weight),
            f(eps),
        ];
        self.go(K::koleo_backward_f32, LaunchCfg::warp_per_row(g * r), &args)
    }

    fn l2norm_forward(
        &self,
        out: &mut Buf<D>,
        norm: &mut Buf<D>,
        inp: &Buf<D>,
        r: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        let args = [
            self.at_mut(out, 0, r * c, "l2 out")?,
            self.at_mut(norm, 0, r, "l2 norm")?,
            self.at(inp, 0, r * c, "l2 inp")?,
            i(r),
            i(c),
            f(eps),
        ];
        self.go(K::l2norm_forward_f32, LaunchCfg::warp_per_row(r), &args)
    }
    fn l2norm_backward(
        &self,
        dinp: &mut Buf<D>,
        dout: &Buf<D>,
        out: &Buf<D>,
        norm: &Buf<D>,
        r: usize,
        c: usize,
        eps: f64,
    ) -> Result<()> {
        let args = [
            self.at_mut(dinp, 0, r * c, "l2 dinp")?,
            self.at(dout, 0, r * c, "l2 dout")?,
            self.at(out, 0, r * c, "l2 out")?,
            self.at(norm, 0, r, "l2 norm")?,
            i(r),
            i(c),
            f(eps),
        ];
        self.go(K::l2norm_backward_f32, LaunchCfg::warp_per_row(r), &args)
    }

    fn weightnorm_forward(
        &self,
        w: &mut Buf<D>,
        norm: &mut Buf<D>,
        params: &Buf<D>,
        v_off: usize,
        g_off: usize,
        k: usize,
        c: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(w, 0, k * c, "wn w")?,
            self.at_mut(norm, 0, k, "wn norm")?,
            self.at(params, v_off, k * c, "weight_v")?,
            self.at(params, g_off, k, "weight_g")?,
            i(k),
            i(c),
        ];
        self.go(K::weightnorm_forward_f32, LaunchCfg::warp_per_row(k), &args)
    }
    fn weightnorm_backward(
        &self,
        dparams: &mut Buf<D>,
        v_off: usize,
        dw: &Buf<D>,
        params: &Buf<D>,
        g_off: usize,
        norm: &Buf<D>,
        k: usize,
        c: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(dparams, v_off, k * c, "wn dv")?,
            self.at(dw, 0, k * c, "wn dw")?,
            self.at(params, v_off, k * c, "weight_v")?,
            self.at(params, g_off, k, "weight_g")?,
            self.at(norm, 0, k, "wn norm")?,
            i(k),
            i(c),
        ];
        self.go(
            K::weightnorm_backward_f32,
            LaunchCfg::warp_per_row(k),
            &args,
        )
    }

    fn dino_loss_forward_backward(
        &self,
        loss: &mut Buf<D>,
        dstudent: &mut Buf<D>,
        tprobs: &mut Buf<D>,
        student: &Buf<D>,
        teacher: &Buf<D>,
        center: Option<&Buf<D>>,
        v: usize,
        s: usize,
        k: usize,
        student_temp: f64,
        (tbuf, tat): DevScalar<Buf<D>>,
    ) -> Result<()> {
        ensure!(v >= 2, "the DINO loss needs at least the 2 global views");
        if let Some(center) = center {
            let args = [
                self.at_mut(tprobs, 0, 2 * s * k, "tprobs")?,
                self.at(teacher, 0, 2 * s * k, "teacher")?,
                self.at(center, 0, k, "center")?,
                i(2 * s),
                i(k),
                self.at(tbuf, tat, 1, "teacher_temp")?,
            ];
            // one block of 256 per teacher row
            self.go(
                K::dino_loss_forward_backward_teacher_f32,
                LaunchCfg::block_per_row(2 * s, 256),
                &args,
            )?;
        }
        let mut row_loss = self.f32_buf(self.alloc_for(v * s, false)?); // (=) one per student row
        let terms = (2 * v - 2) as f64;
        let args = [
            self.at_mut(dstudent, 0, v * s * k, "dstudent")?,
            self.raw_at_mut(row_loss.mem_mut(), 0, v * s, "row loss")?,
            self.at(student, 0, v * s * k, "student")?,
            self.at(tprobs, 0, 2 * s * k, "tprobs")?,
            i(v),
            i(s),
            i(k),
            f(student_temp),
            f(1.0 / (terms * s as f64 * student_temp)),
        ];
        // one block of 256 per student row
        self.go(
            K::dino_loss_forward_backward_student_f32,
            LaunchCfg::block_per_row(v * s, 256),
            &args,
        )?;
        let args = [
            self.at_mut(loss, 0, 1, "loss")?,
            self.raw_at(row_loss.mem(), 0, v * s, "row loss")?,
            i(v * s),
            f(1.0 / (s as f64 * terms)),
        ];
        // one thread: ordered sum of the row losses
        self.go(
            K::dino_loss_forward_backward_sum_f32,
            LaunchCfg::linear(1),
            &args,
        )
    }
    fn dino_loss_sinkhorn(
        &self,
        tprobs: &mut Buf<D>,
        teacher: &Buf<D>,
        r: usize,
        k: usize,
        (tbuf, tat): DevScalar<Buf<D>>,
        iters: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(tprobs, 0, r * k, "tprobs")?,
            self.at(teacher, 0, r * k, "teacher")?,
            i(r),
            i(k),
            self.at(tbuf, tat, 1, "teacher_temp")?,
            i(iters),
        ];
        // one block of 256 for the whole matrix
        self.go(
            K::dino_loss_sinkhorn_f32,
            LaunchCfg::block_per_row(1, 256),
            &args,
        )
    }
    fn dino_loss_monitor(
        &self,
        stats: &mut Buf<D>,
        loss: &Buf<D>,
        tprobs: &Buf<D>,
        teacher: &Buf<D>,
        slot: usize,
        rp: usize,
        rt: usize,
        k: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(stats, 0, 4 * (slot + 1), "monitor stats")?,
            self.at(loss, 0, 1, "monitor loss")?,
            self.at(tprobs, 0, rp * k, "monitor tprobs")?,
            self.at(teacher, 0, rt * k, "monitor teacher")?,
            i(slot),
            i(rp),
            i(rt),
            i(k),
        ];
        // one block of 256
        self.go(
            K::dino_loss_monitor_f32,
            LaunchCfg::block_per_row(1, 256),
            &args,
        )
    }
    fn dino_loss_center_update(
        &self,
        center: &mut Buf<D>,
        teacher: &Buf<D>,
        r: usize,
        k: usize,
        momentum: f64,
    ) -> Result<()> {
        let args = [
            self.at_mut(center, 0, k, "center")?,
            self.at(teacher, 0, r * k, "teacher")?,
            i(r),
            i(k),
            f(momentum),
            f(1.0 - momentum),
        ];
        // one thread per prototype, rows in order
        self.go(K::dino_loss_center_update_f32, LaunchCfg::linear(k), &args)
    }

    fn augment_render(
        &self,
        out: &mut Buf<D>,
        src: &Buf<D>,
        params: &Buf<D>,
        n: usize,
        c: usize,
        crop: usize,
        size: usize,
    ) -> Result<()> {
        let total = n * c * size * size;
        let cells = src.len / (c * crop * crop).max(1);
        ensure!(cells > 0, "augment: no source crops");
        let values = cells * c * crop * crop;
        let (kernel, s) = if src.dtype == DType::U16 {
            // packed u16 (`upload_u16`): 2 bytes per value
            check_extent(src.len, 0, values, "augment src")?;
            let at = self.dev.addr(src.mem());
            (K::augment_render_u16_f32, self.ptr(at, 2 * values))
        } else {
            (
                K::augment_render_f32,
                self.at(src, 0, values, "augment src")?,
            )
        };
        let args = [
            self.at_mut(out, 0, total, "augment out")?,
            s,
            self.at(params, 0, n * (8 + 2 * c), "augment params")?,
            i(n),
            i(c),
            i(crop),
            i(size),
        ];
        // one thread per output element
        self.go(kernel, LaunchCfg::linear(total), &args)
    }
    fn augment_normalize_ntc(
        &self,
        x: &mut Buf<D>,
        stats: &Buf<D>,
        n: usize,
        c: usize,
        hw: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(x, 0, n * c * hw, "augment x")?,
            self.at(stats, 0, 2 * n * c, "ntc stats")?,
            i(n),
            i(c),
            i(hw),
        ];
        // one thread per element
        self.go(
            K::augment_normalize_ntc_f32,
            LaunchCfg::linear(n * c * hw),
            &args,
        )
    }
    fn augment_normalize_zscore(
        &self,
        x: &mut Buf<D>,
        n: usize,
        c: usize,
        hw: usize,
    ) -> Result<()> {
        let args = [
            self.at_mut(x, 0, n * c * hw, "augment x")?,
            i(n),
            i(c),
            i(hw),
        ];
        // one block of 256 per (crop, channel)
        self.go(
            K::augment_normalize_zscore_f32,
            LaunchCfg::block_per_row(n * c, 256),
            &args,
        )
    }

    fn reduce_clip_per_tensor(
        &self,
        grads: &mut Buf<D>,
        ranges: &[(usize, usize)],
        max_norm: f64,
    ) -> Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        let len = grads.len;
        for &(o, l) in ranges {
            ensure!(
                o + l <= len,
                "clip range {o}..{} outside the gradient buffer of {len}",
                o + l
            );
        }
        let table = self.range_table(ranges)?;
        let t = ranges.len();
        let mut norms = self.f32_buf(self.alloc_for(t, false)?); // (=) one per tensor
        let g = self.at(grads, 0, len, "grads")?;
        let tab = self.raw_at(&table, 0, 2 * t, "range table")?;
        // one block of 256 per tensor
        self.go(
            K::reduce_clip_per_tensor_sumsq_f32,
            LaunchCfg::block_per_row(t, 256),
            &[
                self.raw_at_mut(norms.mem_mut(), 0, t, "norms")?,
                g,
                tab,
                i(t),
            ],
        )?;
        let g = self.at_mut(grads, 0, len, "grads")?;
        // one block of 256 per tensor
        self.go(
            K::reduce_clip_per_tensor_scale_f32,
            LaunchCfg::block_per_row(t, 256),
            &[
                g,
                self.raw_at(norms.mem(), 0, t, "norms")?,
                tab,
                i(t),
                f(max_norm),
            ],
        )
    }
    fn adamw_update(
        &self,
        params: &mut Buf<D>,
        m: &mut Buf<D>,
        v: &mut Buf<D>,
        grads: &Buf<D>,
        lo: usize,
        hi: usize,
        (hbuf, hat): DevScalar<Buf<D>>,
    ) -> Result<()> {
        let n = hi.saturating_sub(lo);
        if n == 0 {
            return Ok(());
        }
        let p = self.at_mut(params, lo, n, "adamw params")?;
        let rest = [
            self.at_mut(m, lo, n, "adamw m")?,
            self.at_mut(v, lo, n, "adamw v")?,
            self.at(grads, lo, n, "adamw grads")?,
            i(n),
            self.at(hbuf, hat, ADAMW_WORDS, "adamw hyper")?,
        ];
        // one thread per element; with a kept bf16 copy, it is written in the same pass
        match params.bf16.as_mut() {
            None => self.go(
                K::adamw_update_f32,
                LaunchCfg::linear(n),
                &[&[p][..], &rest].concat(),
            ),
            Some(copy) => {
                let p16 = self.ptr(self.dev.addr_mut(copy) + 2 * lo as u64, 2 * n);
                let args = [&[p, p16][..], &rest].concat();
                self.go(K::adamw_update_bf16, LaunchCfg::linear(n), &args)
            }
        }
    }
    fn ema_update(
        &self,
        teacher: &mut Buf<D>,
        student: &Buf<D>,
        n: usize,
        (mbuf, mat): DevScalar<Buf<D>>,
    ) -> Result<()> {
        let t = self.at_mut(teacher, 0, n, "ema teacher")?;
        let rest = [
            self.at(student, 0, n, "ema student")?,
            i(n),
            self.at(mbuf, mat, 2, "ema momentum")?,
        ];
        // one thread per element; with a kept bf16 copy, it is written in the same pass
        match teacher.bf16.as_mut() {
            None => self.go(
                K::ema_update_f32,
                LaunchCfg::linear(n),
                &[&[t][..], &rest].concat(),
            ),
            Some(copy) => {
                let t16 = self.ptr(self.dev.addr_mut(copy), 2 * n);
                let args = [&[t, t16][..], &rest].concat();
                self.go(K::ema_update_bf16, LaunchCfg::linear(n), &args)
            }
        }
    }
}

impl<D: Device> GpuBackend<D> {
    /// The kept bf16 copy of `buf` (`Backend::keep_bf16_copy`), widened to f32; `None` without one.
    pub fn download_bf16_copy(&self, buf: &Buf<D>) -> Result<Option<Vec<f32>>> {
        let Some(copy) = &buf.bf16 else {
            return Ok(None);
        };
        Ok(Some(unpack_bf16(&self.dtoh_synced(copy)?, buf.len)))
    }
}

/// Elements of a bf16 buffer from its 32-bit words (two per word, the lower index in the low half).
fn unpack_bf16(words: &[f32], len: usize) -> Vec<f32> {
    (0..len)
        .map(|k| {
            let w = words[k / 2].to_bits();
            let h = if k % 2 == 0 { w & 0xffff } else { w >> 16 };
            f32::from_bits(h << 16)
        })
        .collect()
}

/// 16×16 thread tiles over a (cols × rows) output.
/// Model FLOPs of an (R, I) × (I, O) product: 2·R·I·O.
fn gemm_flop(r: usize, ii: usize, o: usize) -> f64 {
    2.0 * r as f64 * ii as f64 * o as f64
}

fn tiles(cols: usize, rows: usize) -> LaunchCfg {
    LaunchCfg {
        grid: [
            cols.div_ceil(16).max(1) as u32,
            rows.div_ceil(16).max(1) as u32,
            1,
        ],
        block: [16, 16, 1],
        smem: 0,
    }
}

/// Rows of the LayerNorm parameter-gradient partial sums (`LN_PARAM_ROWS` in layernorm.cu).
const LN_PARAM_ROWS: usize = 256;
/// Rows of the bias-gradient partial sums (`MM_BIAS_ROWS` in matmul.cu).
const MM_BIAS_ROWS: usize = 256;
/// Tile of the bf16 GEMMs (`MMB_BM`, `MMB_BN`, `MMB_BK` in matmul.cu).
const MMB_BM: usize = 128;
const MMB_BN: usize = 64;
const MMB_BK: usize = 32;
/// Split-K aims for this many CTAs in the weight-gradient GEMM (2 waves of 132 SMs on an H100/H200).
const MMB_TARGET_CTAS: usize = 264;

/// Split-K of the weight-gradient GEMM (K = R rows): (splits, rows per split, a multiple of `MMB_BK`).
/// Enough splits to fill the GPU, each at least 4 k-tiles long.
pub fn weight_grad_splits(r: usize, i: usize, o: usize) -> (usize, usize) {
    let tiles = i.div_ceil(MMB_BN) * o.div_ceil(MMB_BM);
    let max_splits = r.div_ceil(4 * MMB_BK).max(1);
    let want = MMB_TARGET_CTAS.div_ceil(tiles).clamp(1, max_splits);
    let rows = r.div_ceil(want).next_multiple_of(MMB_BK).max(MMB_BK);
    (r.div_ceil(rows).max(1), rows)
}

impl<D: Device> GpuBackend<D> {
    fn matmul_forward_at(
        &self,
        prec: Precision,
        out: &mut Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        b_off: Option<usize>,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        let bias = match b_off {
            Some(bo) => self.at(params, bo, o, "bias")?,
            None => KArg::Ptr(0),
        };
        if prec == Precision::Bf16 {
            return self.matmul_forward_bf16(out, inp, params, w_off, bias, r, ii, o);
        }
        let args = [
            self.at_mut(out, 0, r * o, "matmul out")?,
            self.at(inp, 0, r * ii, "matmul inp")?,
            self.at(params, w_off, o * ii, "matmul weight")?,
            bias,
            i(r),
            i(ii),
            i(o),
            i(b_off.is_some() as usize),
        ];
        // 16×16 output tiles: grid (CEIL_DIV(O,16), CEIL_DIV(R,16)), block (16,16)
        self.note_flop(gemm_flop(r, ii, o));
        self.go(K::matmul_forward_f32, tiles(o, r), &args)
    }
    fn matmul_backward_at(
        &self,
        prec: Precision,
        dinp: Option<&mut Buf<D>>,
        dparams: &mut Buf<D>,
        dw_off: usize,
        db_off: Option<usize>,
        dout: &Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        let dy = self.at(dout, 0, r * o, "matmul dout")?;
        if let Some(bo) = db_off {
            let db = self.at_mut(dparams, bo, o, "matmul dbias")?;
            self.matmul_backward_bias(db, dy, r, o)?;
        }
        if prec == Precision::Bf16 {
            return self
                .matmul_backward_bf16(dinp, dparams, dw_off, dout, inp, params, w_off, r, ii, o);
        }
        if let Some(dinp) = dinp {
            let args = [
                self.at_mut(dinp, 0, r * ii, "matmul dinp")?,
                dy,
                self.at(params, w_off, o * ii, "matmul weight")?,
                i(r),
                i(ii),
                i(o),
            ];
            // grid (CEIL_DIV(I,16), CEIL_DIV(R,16)), block (16,16)
            self.note_flop(gemm_flop(r, ii, o));
            self.go(K::matmul_backward_input_f32, tiles(ii, r), &args)?;
        }
        let args = [
            self.at_mut(dparams, dw_off, o * ii, "matmul dweight")?,
            dy,
            self.at(inp, 0, r * ii, "matmul inp")?,
            i(r),
            i(ii),
            i(o),
        ];
        // grid (CEIL_DIV(I,16), CEIL_DIV(O,16)), block (16,16)
        self.note_flop(gemm_flop(r, ii, o));
        self.go(K::matmul_backward_weight_f32, tiles(ii, o), &args)
    }

    /// dbias (+=) column sums of dout (R, O), two-level: 256-row partial sums, then one fixed-order pass.
    fn matmul_backward_bias(&self, db: KArg, dy: KArg, r: usize, o: usize) -> Result<()> {
        let nb = r.div_ceil(MM_BIAS_ROWS).max(1);
        let mut partial = self.take(nb * o)?;
        let pa = self.raw_at_mut(&mut partial, 0, nb * o, "dbias partial")?;
        let cfg = LaunchCfg {
            grid: [o.div_ceil(32) as u32, nb as u32, 1],
            block: [32, 8, 1],
            smem: 0,
        };
        // grid (CEIL_DIV(O,32), CEIL_DIV(R,256)), block (32,8)
        let r1 = self.go(
            K::matmul_backward_bias_partial_f32,
            cfg,
            &[pa, dy, i(r), i(o)],
        );
        // one thread per column
        let r2 = r1.and_then(|_| {
            self.go(
                K::matmul_backward_bias_final_f32,
                LaunchCfg::linear(o),
                &[db, pa, i(nb), i(o)],
            )
        });
        self.give(partial);
        r2
    }

    /// A bf16 copy of the (rows, cols) f32 matrix at `off` of `src`, leading dimension round_up(cols, 8).
    fn bf16_copy(
        &self,
        src: &Buf<D>,
        off: usize,
        rows: usize,
        cols: usize,
        what: &str,
    ) -> Result<D::Mem> {
        let ld = cols.next_multiple_of(8);
        let n = rows * ld;
        ensure!(
            n <= i32::MAX as usize,
            "{what}: {rows}×{cols} is beyond the 2^31-element bf16 GEMM limit"
        );
        let x = self.at(src, off, rows * cols, what)?;
        let mut dst = self.take(n.div_ceil(2).max(1))?;
        let d = self.ptr(self.dev.addr_mut(&mut dst), 2 * n);
        // one thread per element of the padded bf16 matrix
        let r = self.go(
            K::matmul_forward_round_bf16,
            LaunchCfg::linear(n),
            &[d, x, i(rows), i(cols), i(ld)],
        );
        match r {
            Ok(()) => Ok(dst),
            Err(e) => {
                self.give(dst);
                Err(e)
            }
        }
    }

    fn matmul_forward_bf16(
        &self,
        out: &mut Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        bias: KArg,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        let y = self.at_mut(out, 0, r * o, "matmul out")?;
        let has_bias = !matches!(bias, KArg::Ptr(0));
        self.with_bf16_x_w(inp, params, w_off, r, ii, o, |x, w| {
            // grid (CEIL_DIV(O,64), CEIL_DIV(R,BM)), block 2·BM (gemm_tile_rows)
            let args = [y, x, w, bias, i(r), i(ii), i(o), i(has_bias as usize)];
            self.note_flop(gemm_flop(r, ii, o));
            self.go(K::matmul_forward_bf16, self.gemm_tiles(o, r), &args)
        })
    }

    /// The bf16 GEMM operand for the (rows, cols) matrix at `off` of `src`: the buffer itself when it
    /// is stored in bf16 (an activation from `zeros_act`), its kept bf16 copy when that is 16-byte
    /// aligned (weights, `keep_bf16_copy`), else a rounded copy in scratch (`matmul_forward_round_bf16`),
    /// returned with the address so the caller gives it back.
    fn bf16_operand(
        &self,
        src: &Buf<D>,
        off: usize,
        rows: usize,
        cols: usize,
        what: &str,
    ) -> Result<(KArg, Option<D::Mem>)> {
        if src.dtype == DType::Bf16 {
            ensure!(
                off == 0 && cols.is_multiple_of(8),
                "{what}: a bf16 operand must start at element 0 with whole 16-byte rows (cols {cols})"
            );
            return Ok((self.at_bf16(src, rows * cols, what)?, None));
        }
        if let Some(copy) = &src.bf16 {
            if off.is_multiple_of(8) && cols.is_multiple_of(8) {
                check_extent(src.len, off, rows * cols, what)?;
                let at = self.dev.addr(copy) + 2 * off as u64;
                return Ok((self.ptr(at, 2 * rows * cols), None));
            }
        }
        let m = self.bf16_copy(src, off, rows, cols, what)?;
        Ok((
            self.ptr(self.dev.addr(&m), 2 * rows * cols.next_multiple_of(8)),
            Some(m),
        ))
    }

    /// Gives back the scratch buffers of `bf16_operand`.
    fn give_all(&self, ms: impl IntoIterator<Item = Option<D::Mem>>) {
        for m in ms.into_iter().flatten() {
            self.give(m);
        }
    }

    /// Runs `f` with the bf16 operands of inp (R, I) and of the weight (O, I) at `w_off` of `params`.
    fn with_bf16_x_w(
        &self,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        r: usize,
        ii: usize,
        o: usize,
        f: impl FnOnce(KArg, KArg) -> Result<()>,
    ) -> Result<()> {
        let (x, xs) = self.bf16_operand(inp, 0, r, ii, "matmul inp")?;
        let (w, ws) = match self.bf16_operand(params, w_off, o, ii, "matmul weight") {
            Ok(w) => w,
            Err(e) => {
                self.give_all([xs]);
                return Err(e);
            }
        };
        let res = f(x, w);
        self.give_all([xs, ws]);
        res
    }

    /// dst (bf16) = round_bf16(src (f32)), n elements.
    fn round_into(&self, dst: &mut Buf<D>, src: &Buf<D>, n: usize) -> Result<()> {
        let d = self.at_bf16_mut(dst, n, "bf16 out")?;
        let x = self.at(src, 0, n, "f32 in")?;
        self.round_flat(d, x, n)
    }

    /// Re-rounds elements [off, off + n) of the kept bf16 copy of `buf`, if it has one.
    fn refresh_bf16_copy(&self, buf: &mut Buf<D>, off: usize, n: usize) -> Result<()> {
        if buf.bf16.is_none() || n == 0 {
            return Ok(());
        }
        let x = self.at(buf, off, n, "bf16 weight copy source")?;
        let copy = buf.bf16.as_mut().expect("checked above");
        let d = self.ptr(self.dev.addr_mut(copy) + 2 * off as u64, 2 * n);
        self.round_flat(d, x, n)
    }

    /// bf16 at `d` = round_bf16 of n f32 at `x`: `matmul_forward_round_bf16` on a (1, n) matrix.
    fn round_flat(&self, d: KArg, x: KArg, n: usize) -> Result<()> {
        ensure!(
            n <= i32::MAX as usize,
            "bf16 copy: {n} elements is beyond the 2^31 limit"
        );
        // one thread per element: a (1, n) matrix without padding
        self.go(
            K::matmul_forward_round_bf16,
            LaunchCfg::linear(n),
            &[d, x, i(1), i(n), i(n)],
        )
    }

    fn matmul_backward_bf16(
        &self,
        dinp: Option<&mut Buf<D>>,
        dparams: &mut Buf<D>,
        dw_off: usize,
        dout: &Buf<D>,
        inp: &Buf<D>,
        params: &Buf<D>,
        w_off: usize,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        let (dy, dys) = self.bf16_operand(dout, 0, r, o, "matmul dout")?;
        let mut res = Ok(());
        if let Some(dinp) = dinp {
            res = self
                .bf16_operand(params, w_off, o, ii, "matmul weight")
                .and_then(|(w, ws)| {
                    let args = self
                        .at_mut(dinp, 0, r * ii, "matmul dinp")
                        .map(|d| [d, dy, w, i(r), i(ii), i(o)]);
                    // grid (CEIL_DIV(I,64), CEIL_DIV(R,BM)), block 2·BM (gemm_tile_rows)
                    let res = args.and_then(|args| {
                        self.note_flop(gemm_flop(r, ii, o));
                        self.go(K::matmul_backward_input_bf16, self.gemm_tiles(ii, r), &args)
                    });
                    self.give_all([ws]);
                    res
                });
        }
        let res =
            res.and_then(|_| self.matmul_backward_weight_bf16(dparams, dw_off, dy, inp, r, ii, o));
        self.give_all([dys]);
        res
    }

    /// dW (+=) doutᵀ·inp: split-K partial sums into scratch, then a fixed-order reduction (deterministic).
    fn matmul_backward_weight_bf16(
        &self,
        dparams: &mut Buf<D>,
        dw_off: usize,
        dy: KArg,
        inp: &Buf<D>,
        r: usize,
        ii: usize,
        o: usize,
    ) -> Result<()> {
        let dw = self.at_mut(dparams, dw_off, o * ii, "matmul dweight")?;
        let (x, xs) = self.bf16_operand(inp, 0, r, ii, "matmul inp")?;
        let (splits, rows) = weight_grad_splits(r, ii, o);
        let n = o * ii;
        let grid = gemm_grid(ii, o, splits, MMB_BM); // split-K fills the GPU: the 128-row tile
        self.note_flop(gemm_flop(r, ii, o));
        if splits == 1 {
            // grid (CEIL_DIV(I,64), CEIL_DIV(O,128), 1), block 256: dW (+=) in the epilogue
            let res = self.go(
                K::matmul_backward_weight_bf16,
                grid,
                &[dw, dy, x, i(r), i(ii), i(o), i(rows)],
            );
            self.give_all([xs]);
            return res;
        }
        let mut partial = self.take(splits * n)?;
        let pa = self.raw_at_mut(&mut partial, 0, splits * n, "dweight partial")?;
        let args = [pa, dy, x, i(r), i(ii), i(o), i(rows)];
        // grid (CEIL_DIV(I,64), CEIL_DIV(O,128), S), block 256
        let res = self
            .go(K::matmul_backward_weight_bf16, grid, &args)
            .and_then(|_| {
                // one thread per element of dW
                self.go(
                    K::matmul_backward_weight_reduce_f32,
                    LaunchCfg::linear(n),
                    &[dw, pa, i(n), i(splits)],
                )
            });
        self.give_all([xs]);
        self.give(partial);
        res
    }
}

/// Largest token count and head size of the bf16 attention kernels (`ATT_MAX` in attention.cu).
const ATT_MAX: usize = crate::backend::precision::ATTENTION_BF16_MAX;

/// Dynamic shared memory of `attention_forward_bf16` / `attention_backward_bf16` (bytes).
fn attention_smem(n: usize, hs: usize, backward: bool) -> Result<u32> {
    ensure!(
        n <= ATT_MAX && hs <= ATT_MAX,
        "bf16 attention handles up to {ATT_MAX} tokens and head size {ATT_MAX} (got {n} tokens, head size {hs}); \
         HINT: --precision f32"
    );
    let (np, hp) = (n.div_ceil(16) * 16, hs.div_ceil(16) * 16);
    let elems = if backward {
        4 * np * (hp + 8) + 2 * np * (np + 8)
    } else {
        3 * np * (hp + 8)
    };
    Ok((2 * elems) as u32)
}

fn attention_cfg(b: usize, smem: u32) -> LaunchCfg {
    LaunchCfg {
        grid: [b.max(1) as u32, 1, 1],
        block: [128, 1, 1],
        smem,
    }
}

/// Rows of the bf16 GEMM tile for an (M, N) output: 128 (block 256) when the 128-row grid fills at
/// least one wave of `MMB_TARGET_CTAS` CTAs, else 64 (block 128: twice the CTAs for small GEMMs, such as
/// the head's layers over a few hundred set rows). The kernels pick their tile from the block size.
pub fn gemm_tile_rows(m: usize, n: usize) -> usize {
    if m.div_ceil(MMB_BM) * n.div_ceil(MMB_BN) >= MMB_TARGET_CTAS {
        MMB_BM
    } else {
        MMB_BM / 2
    }
}

impl<D: Device> GpuBackend<D> {
    /// Grid of the forward and data-gradient bf16 GEMMs: (CEIL_DIV(N,64), CEIL_DIV(M,BM)), block 2·BM,
    /// BM from `gemm_tile_rows` unless `gemm_tile` fixes it.
    fn gemm_tiles(&self, n: usize, m: usize) -> LaunchCfg {
        gemm_grid(
            n,
            m,
            1,
            self.gemm_tile.unwrap_or_else(|| gemm_tile_rows(m, n)),
        )
    }
}

fn gemm_grid(n: usize, m: usize, splits: usize, bm: usize) -> LaunchCfg {
    LaunchCfg {
        grid: [
            n.div_ceil(MMB_BN).max(1) as u32,
            m.div_ceil(bm).max(1) as u32,
            splits.max(1) as u32,
        ],
        block: [2 * bm as u32, 1, 1],
        smem: 0,
    }
}
