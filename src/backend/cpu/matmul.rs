//! CPU twin of `kernels/matmul.cu`: the Linear layer `out = inp · Wᵀ + b` (PyTorch `addmm`) and its
//! backward, through the `gemm` crate (row-major views expressed as strides). The `_bf16` twins round
//! the GEMM operands to bf16 exactly where the tensor-core kernels do (`matmul_forward_round_bf16`) and
//! accumulate in the scalar type; only the summation order differs from the kernels.
use super::{Real, REDUCE_CHUNK};
use rayon::prelude::*;

fn par() -> gemm::Parallelism {
    gemm::Parallelism::Rayon(rayon::current_num_threads())
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

/// dW: (O, I) (+=) doutᵀ (O, R) · inp (R, I).
pub fn matmul_backward_weight<T: Real>(
    dw: &mut [T],
    dout: &[T],
    inp: &[T],
    r: usize,
    i: usize,
    o: usize,
) {
    assert!(dw.len() >= o * i && dout.len() >= r * o && inp.len() >= r * i);
    // SAFETY: dst (o×i, row stride i); lhs[m][k] = dout[k·o + m] (o×r view); rhs = inp (r×i). In bounds.
    unsafe {
        gemm::gemm(
            o,
            i,
            r,
            dw.as_mut_ptr(),
            1,
            i as isize,
            true,
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
            par(),
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
