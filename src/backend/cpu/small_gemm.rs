//! Small dense products inside one image (attention's N×N scores and N×HS outputs), register-blocked
//! so the compiler keeps a 4×16 tile of sums in vector registers: `gemm` packs both operands on every
//! call, which costs more than the product at these sizes (N ≈ 10–37, HS = 32–64).
//!
//! Each output is one fused multiply-add chain over k in increasing order, started from zero and then
//! stored or added: the result depends only on the operands, never on the blocking or the thread count.
//! `mul_add` is a single rounding whether the CPU has FMA (x86-64-v3: `vfmadd`) or not (libm's `fma`):
//! the same bits either way.
use super::Real;

/// Rows of the register tile.
const R: usize = 4;

/// c[i·ldc + j] (= or +=) Σ_k a[i·lda + k] · b[k·ldb + j] for i < m, j < n, k < kk (all row-major).
#[allow(clippy::too_many_arguments)]
pub fn gemm_nn<T: Real>(
    c: &mut [T],
    ldc: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    m: usize,
    n: usize,
    kk: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        c.len() >= (m - 1) * ldc + n
            && a.len() >= (m - 1) * lda + kk
            && (kk == 0 || b.len() >= (kk - 1) * ldb + n),
        "gemm_nn: operand too short for {m}×{n}×{kk}"
    );
    // The last n % 8 columns run as an 8-wide tile over a zero-padded copy of them (the padding's sums
    // are discarded), so they too run 8 lanes wide.
    let tail = n % 8;
    let pad = if tail > 0 {
        pad_cols(b, ldb, n - tail, tail, kk)
    } else {
        Vec::new()
    };
    let mut i0 = 0;
    while i0 + R <= m {
        cols::<T, R>(c, ldc, a, lda, b, ldb, &pad, i0, n, kk, accumulate);
        i0 += R;
    }
    while i0 < m {
        cols::<T, 1>(c, ldc, a, lda, b, ldb, &pad, i0, n, kk, accumulate);
        i0 += 1;
    }
}

/// Columns j0..j0+rem of b, zero-padded to 8 per row k: (kk, 8).
fn pad_cols<T: Real>(b: &[T], ldb: usize, j0: usize, rem: usize, kk: usize) -> Vec<T> {
    let mut pad = vec![T::zero(); kk * 8];
    for (k, row) in pad.chunks_exact_mut(8).enumerate() {
        row[..rem].copy_from_slice(&b[k * ldb + j0..][..rem]);
    }
    pad
}

/// Rows i0..i0+RR of the product, every column: 16-wide tiles, then one 8-wide, then the padded tail.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn cols<T: Real, const RR: usize>(
    c: &mut [T],
    ldc: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    pad: &[T],
    i0: usize,
    n: usize,
    kk: usize,
    accumulate: bool,
) {
    let rows: [&[T]; RR] = std::array::from_fn(|r| &a[(i0 + r) * lda..][..kk]);
    let mut j0 = 0;
    while j0 + 16 <= n {
        let acc = tile::<T, RR, 16>(&rows, &b[j0..], ldb, kk);
        store(c, ldc, i0, j0, &acc, 16, accumulate);
        j0 += 16;
    }
    if j0 + 8 <= n {
        let acc = tile::<T, RR, 8>(&rows, &b[j0..], ldb, kk);
        store(c, ldc, i0, j0, &acc, 8, accumulate);
        j0 += 8;
    }
    if j0 < n {
        let acc = tile::<T, RR, 8>(&rows, pad, 8, kk);
        store(c, ldc, i0, j0, &acc, n - j0, accumulate);
    }
}

/// The RR×W sums Σ_k rows[r][k]·b[k·ldb + w], each one fused multiply-add chain in k order.
#[inline(always)]
fn tile<T: Real, const RR: usize, const W: usize>(
    rows: &[&[T]; RR],
    b: &[T],
    ldb: usize,
    kk: usize,
) -> [[T; W]; RR] {
    let mut acc = [[T::zero(); W]; RR];
    for k in 0..kk {
        let bk: &[T; W] = b[k * ldb..][..W].try_into().expect("a W-wide slice");
        for r in 0..RR {
            let x = rows[r][k];
            for w in 0..W {
                acc[r][w] = x.mul_add(bk[w], acc[r][w]);
            }
        }
    }
    acc
}

/// The first `width` columns of each tile row into c at (i0 + r, j0 ..), stored or added.
#[inline(always)]
fn store<T: Real, const W: usize>(
    c: &mut [T],
    ldc: usize,
    i0: usize,
    j0: usize,
    acc: &[[T; W]],
    width: usize,
    accumulate: bool,
) {
    for (r, acc) in acc.iter().enumerate() {
        let out = &mut c[(i0 + r) * ldc + j0..][..width];
        if accumulate {
            for (o, &s) in out.iter_mut().zip(acc) {
                *o += s;
            }
        } else {
            out.copy_from_slice(&acc[..width]);
        }
    }
}

/// dst[j·ld_dst + i] = src[i·ld_src + j] for i < rows, j < cols: a transposed copy into scratch.
pub fn transpose<T: Real>(
    dst: &mut [T],
    ld_dst: usize,
    src: &[T],
    ld_src: usize,
    rows: usize,
    cols: usize,
) {
    for i in 0..rows {
        let row = &src[i * ld_src..][..cols];
        for (j, &v) in row.iter().enumerate() {
            dst[j * ld_dst + i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked product against the textbook triple loop with the same fused chain: equal bits, for
    /// shapes that hit every tile width and the single-row remainder, stored and accumulated, on strided
    /// operands.
    #[test]
    fn blocked_product_equals_the_plain_fma_chain() {
        for &(m, n, kk) in &[
            (37, 37, 32),
            (10, 64, 10),
            (5, 25, 3),
            (1, 1, 1),
            (9, 17, 64),
            (4, 8, 0),
        ] {
            let (lda, ldb, ldc) = (kk + 3, n + 5, n + 2);
            let val = |i: usize| ((i * 2_654_435_761usize) % 997) as f32 / 499.0 - 1.0;
            let a: Vec<f32> = (0..m * lda).map(val).collect();
            let b: Vec<f32> = (0..kk.max(1) * ldb).map(|i| val(i + 7)).collect();
            for accumulate in [false, true] {
                let c0: Vec<f32> = (0..m * ldc).map(|i| val(i + 3)).collect();
                let mut c = c0.clone();
                gemm_nn(&mut c, ldc, &a, lda, &b, ldb, m, n, kk, accumulate);
                for i in 0..m {
                    for j in 0..ldc {
                        let got = c[i * ldc + j];
                        if j >= n {
                            assert_eq!(got.to_bits(), c0[i * ldc + j].to_bits(), "padding touched");
                            continue;
                        }
                        let mut s = 0f32;
                        for k in 0..kk {
                            s = a[i * lda + k].mul_add(b[k * ldb + j], s);
                        }
                        let want = if accumulate { c0[i * ldc + j] + s } else { s };
                        assert_eq!(got.to_bits(), want.to_bits(), "{m}×{n}×{kk} at ({i}, {j})");
                    }
                }
            }
        }
    }

    #[test]
    fn transpose_swaps_indices() {
        let src: Vec<f64> = (0..12).map(f64::from).collect();
        let mut dst = vec![0.0; 3 * 5];
        transpose(&mut dst, 5, &src, 4, 3, 3);
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(dst[j * 5 + i], src[i * 4 + j]);
            }
        }
    }
}
