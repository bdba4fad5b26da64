//! CPU twin of `kernels/matmul.cu`: the Linear layer `out = inp · Wᵀ + b` (PyTorch `addmm`) and its
//! backward, through the `gemm` crate (row-major views expressed as strides). The `_bf16` twins round
//! the GEMM operands to bf16 exactly where the tensor-core kernels do (`matmul_forward_round_bf16`) and
//! accumulate in the scalar type; only the summation order differs from the kernels.
use super::{Real, REDUCE_CHUNK};
use rayon::prelude::*;

fn par() -> gemm::Parallelism {
    on_threads(rayon::current_num_threads())
}

/// One `gemm` call on `n` threads of the current rayon pool.
fn on_threads(n: usize) -> gemm::Parallelism {
    match n {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// out: (R, O) = inp (R, I) · Wᵀ + bias; W: (O, I), bias: (O).
pub fn matmul_forward<T: Real>(
    out: &mut [T],
    inp: &[T],
    w: &[T],
    bias: Option<&[T]>,
    r: usize,
    i: usize,
    o: usize,
) {
    assert!(out.len() >= r * o && inp.len() >= r * i && w.len() >= o * i);
    let out = &mut out[..r * o];
    let read_dst = match bias {
        Some(b) => {
            out.par_chunks_mut(o)
                .for_each(|row| row.copy_from_slice(&b[..o]));
            true
        }
        None => false,
    };
    // SAFETY: the asserts above bound every index the strides can reach: dst (r×o, row stride o),
    // lhs (r×i, row stride i), rhs[k][n] = W[n·i + k] (i×o view of the (o, i) weight).
    unsafe {
        gemm::gemm(
            r,
            o,
            i,
            out.as_mut_ptr(),
            1,
            o as isize,
            read_dst,
            inp.as_ptr(),
            1,
            i as isize,
            w.as_ptr(),
            i as isize,
            1,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par(),
        );
    }
}

/// dinp: (R, I) (=) = dout (R, O) · W (O, I).
pub fn matmul_backward_input<T: Real>(
    dinp: &mut [T],
    dout: &[T],
    w: &[T],
    r: usize,
    i: usize,
    o: usize,
) {
    assert!(dinp.len() >= r * i && dout.len() >= r * o && w.len() >= o * i);
    // SAFETY: dst (r×i, row stride i), lhs (r×o, row stride o), rhs = W (o×i, row stride i), all in bounds.
    unsafe {
        gemm::gemm(
            r,
            i,
            o,
            dinp.as_mut_ptr(),
            1,
            i as isize,
            false,
            dout.as_ptr(),
            1,
            o as isize,
            w.as_ptr(),
            1,
            i as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            par(),
        );
    }
}

/// The weight gradient is summed in two halves (`matmul_backward_weight`) from this many rows R on, where
/// the gradient has at most `DW_SPLIT_MAX_OUT` elements (the demo model's layers: 96 × 384 at most; the
/// ViT-S ones, 384 × 384 and up, measured no faster split).
const DW_SPLIT_MIN_ROWS: usize = 512;
const DW_SPLIT_MAX_OUT: usize = 1 << 16;

/// dW: (O, I) (+=) doutᵀ (O, R) · inp (R, I).
///
/// For narrow layers (`DW_SPLIT_MAX_OUT`) from `DW_SPLIT_MIN_ROWS` rows on, the sum over R runs as two
/// halves at once, each a GEMM on half the threads: dW ← (dW + Σ first half) + Σ second half. `gemm`
/// splits only the output (O × I, small for these layers) between threads, so one GEMM over all R
/// leaves threads idle (measured on the demo model's shapes: 1.2-2x, docs/performance.md). The halves
/// depend only on R, never on the thread count, so results stay bit-identical across thread counts.
pub fn matmul_backward_weight<T: Real>(
    dw: &mut [T],
    dout: &[T],
    inp: &[T],
    r: usize,
    i: usize,
    o: usize,
) {
    assert!(dw.len() >= o * i && dout.len() >= r * o && inp.len() >= r * i);
    if r < DW_SPLIT_MIN_ROWS || o * i > DW_SPLIT_MAX_OUT {
        return dw_gemm(&mut dw[..o * i], true, dout, inp, r, i, o, par());
    }
    let h = r / 2;
    let threads = rayon::current_num_threads();
    let (t1, t2) = (threads.div_ceil(2), (threads / 2).max(1));
    let mut second = vec![T::zero(); o * i];
    rayon::join(
        || {
            dw_gemm(
                &mut dw[..o * i],
                true,
                &dout[..h * o],
                &inp[..h * i],
                h,
                i,
                o,
                on_threads(t1),
            )
        },
        || {
            let rest = r - h;
            let (dy, x) = (&dout[h * o..r * o], &inp[h * i..r * i]);
            dw_gemm(&mut second, false, dy, x, rest, i, o, on_threads(t2))
        },
    );
    for (d, s) in dw.iter_mut().zip(&second) {
        *d += *s;
    }
}

/// dst (O, I) (=, or += with `accumulate`) doutᵀ · inp over r rows, on `threads` threads.
fn dw_gemm<T: Real>(
    dst: &mut [T],
    accumulate: bool,
    dout: &[T],
    inp: &[T],
    r: usize,
    i: usize,
    o: usize,
    threads: gemm::Parallelism,
) {
    assert!(dst.len() >= o * i && dout.len() >= r * o && inp.len() >= r * i);
    // SAFETY: dst (o×i, row stride i); lhs[m][k] = dout[k·o + m] (o×r view); rhs = inp (r×i). In bounds.
    unsafe {
        gemm::gemm(
            o,
            i,
            r,
            dst.as_mut_ptr(),
            1,
            i as isize,
            accumulate,
            dout.as_ptr(),
            o as isize,
            1,
            inp.as_ptr(),
            1,
            i as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            threads,
        );
    }
}

/// db: (O) (+=) column sums of dout (R, O); fixed chunking over rows.
pub fn matmul_backward_bias<T: Real>(db: &mut [T], dout: &[T], r: usize, o: usize) {
    let partial: Vec<Vec<T>> = dout[..r * o]
        .par_chunks(REDUCE_CHUNK * o)
        .map(|chunk| {
            let mut acc = vec![T::zero(); o];
            for row in chunk.chunks(o) {
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a += x;
                }
            }
            acc
        })
        .collect();
    for p in partial {
        for (d, x) in db.iter_mut().zip(p) {
            *d += x;
        }
    }
}

/// x rounded to the nearest bf16 (ties to even, NaN kept), widened back: `matmul_forward_round_bf16`.
/// Rounded from the f32 value, as the kernel does (`half`'s direct f64 → bf16 loses the sticky bits
/// below the f32 mantissa and can round a value just above a tie down).
pub fn round_bf16<T: Real>(x: T) -> T {
    T::c(f64::from(half::bf16::from_f32(x.d() as f32).to_f32()))
}

/// Twin of `matmul_forward_round_bf16` without the padding (the padded columns are zeros and add
/// nothing to a product).
pub fn matmul_forward_round_bf16<T: Real>(x: &[T]) -> Vec<T> {
    x.par_iter().map(|&v| round_bf16(v)).collect()
}

/// `matmul_forward_bf16`: out (=) = bf16(inp) · bf16(W)ᵀ + bias, f32 accumulation, bias in full precision.
pub fn matmul_forward_bf16<T: Real>(
    out: &mut [T],
    inp: &[T],
    w: &[T],
    bias: Option<&[T]>,
    r: usize,
    i: usize,
    o: usize,
) {
    let (x, w) = (
        matmul_forward_round_bf16(&inp[..r * i]),
        matmul_forward_round_bf16(&w[..o * i]),
    );
    matmul_forward(out, &x, &w, bias, r, i, o);
}

/// `matmul_forward_residual_bf16`: out (=) = resid + scale[row / n]·(bf16(inp) · bf16(W)ᵀ + bias).
pub fn matmul_forward_residual_bf16<T: Real>(
    out: &mut [T],
    inp: &[T],
    w: &[T],
    bias: &[T],
    resid: &[T],
    scale: &[T],
    r: usize,
    i: usize,
    o: usize,
    n: usize,
) {
    let mut branch = vec![T::zero(); r * o];
    matmul_forward_bf16(&mut branch, inp, w, Some(bias), r, i, o);
    super::residual::residual_forward(out, resid, &branch, scale, r / n, n * o);
}

/// `matmul_backward_input_bf16`: dinp (=) = bf16(dout) · bf16(W).
pub fn matmul_backward_input_bf16<T: Real>(
    dinp: &mut [T],
    dout: &[T],
    w: &[T],
    r: usize,
    i: usize,
    o: usize,
) {
    let (dy, w) = (
        matmul_forward_round_bf16(&dout[..r * o]),
        matmul_forward_round_bf16(&w[..o * i]),
    );
    matmul_backward_input(dinp, &dy, &w, r, i, o);
}

/// `matmul_backward_weight_bf16` + `matmul_backward_weight_reduce_f32`: dW (+=) bf16(dout)ᵀ · bf16(inp).
pub fn matmul_backward_weight_bf16<T: Real>(
    dw: &mut [T],
    dout: &[T],
    inp: &[T],
    r: usize,
    i: usize,
    o: usize,
) {
    let (dy, x) = (
        matmul_forward_round_bf16(&dout[..r * o]),
        matmul_forward_round_bf16(&inp[..r * i]),
    );
    matmul_backward_weight(dw, &dy, &x, r, i, o);
}

#[cfg(test)]
mod tests {
    use super::{matmul_backward_weight, DW_SPLIT_MIN_ROWS};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|k| {
                let h = (k as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The weight gradient summed in two halves (R ≥ DW_SPLIT_MIN_ROWS, narrow output) and in one GEMM
    /// (few rows) is bit-identical on 1, 2 and 3 threads, and equals the f64 sum to f32 rounding.
    #[test]
    fn weight_gradient_is_the_same_on_any_thread_count() {
        for &(r, i, o) in &[(DW_SPLIT_MIN_ROWS + 37, 24, 40), (100, 24, 40)] {
            let (dy, x, dw0) = (data(r * o, 1), data(r * i, 2), data(o * i, 3));
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("pool");
                let mut dw = dw0.clone();
                pool.install(|| matmul_backward_weight(&mut dw, &dy, &x, r, i, o));
                dw
            };
            let one = on(1);
            assert_eq!(one, on(2), "{r}×{i}×{o}");
            assert_eq!(one, on(3), "{r}×{i}×{o}");
            for (e, &got) in one.iter().enumerate() {
                let (m, n) = (e / i, e % i);
                let want = f64::from(dw0[e])
                    + (0..r)
                        .map(|k| f64::from(dy[k * o + m]) * f64::from(x[k * i + n]))
                        .sum::<f64>();
                assert!((f64::from(got) - want).abs() < 1e-4, "{e}: {got} vs {want}");
            }
        }
    }
}
