//! Positional-embedding interpolation (algorithm.md §1.3): the learned (g×g + 1, C) table is resized to
//! the crop's (o×o) patch grid by PyTorch's bicubic `F.interpolate(scale_factor=(o+0.1)/g)`, i.e. source
//! coordinate step 1/s (not in/out), cubic convolution with A = −0.75, clamped neighbour indices. The map
//! is linear and fixed, so it is a dense matrix M (P, G2) and the backward is Mᵀ.

/// Cubic-convolution coefficients for fractional offset `t`, `UpSample.h: get_cubic_upsample_coefficients`.
fn cubic_coeffs(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let c1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)]
}

/// The 1-D weight matrix (o, g) for resizing `g` cells to `o` cells with scale factor `(o + 0.1) / g`.
/// When `o == g` the reference uses the table as is (identity).
pub fn axis_weights(g: usize, o: usize) -> Vec<f64> {
    let mut w = vec![0.0; o * g];
    if o == g {
        for i in 0..o {
            w[i * g + i] = 1.0;
        }
        return w;
    }
    let s = (o as f64 + 0.1) / g as f64;
    let step = 1.0 / s;
    for i in 0..o {
        let src = step * (i as f64 + 0.5) - 0.5;
        let i0 = src.floor();
        let t = src - i0;
        let c = cubic_coeffs(t);
        for (k, ck) in c.iter().enumerate() {
            let idx = (i0 as i64 - 1 + k as i64).clamp(0, g as i64 - 1) as usize;
            w[i * g + idx] += ck;
        }
    }
    w
}

/// The dense map M (P = o², G2 = g²): `pos_patch[i·o + j] = Σ_{a,b} Wv[i,a]·Wh[j,b]·grid[a·g + b]`.
pub fn interp_matrix(g: usize, o: usize) -> Vec<f64> {
    let w = axis_weights(g, o);
    let g2 = g * g;
    let mut m = vec![0.0; o * o * g2];
    for i in 0..o {
        for j in 0..o {
            let row = &mut m[(i * o + j) * g2..(i * o + j + 1) * g2];
            for a in 0..g {
                let wa = w[i * g + a];
                if wa == 0.0 {
                    continue;
                }
                for b in 0..g {
                    row[a * g + b] = wa * w[j * g + b];
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of algorithm.md §1.3 (96 px crops, patch 16: 14 → 6).
    #[test]
    fn matches_reference_table_96() {
        let w = axis_weights(14, 6);
        let expect: [&[(usize, f64)]; 6] = [
            &[(0, 0.335622), (1, 0.775220), (2, -0.110842)],
            &[(1, -0.002327), (2, 0.047735), (3, 0.992829), (4, -0.038236)],
            &[(4, -0.103597), (5, 0.889656), (6, 0.246245), (7, -0.032304)],
            &[(6, -0.087226), (7, 0.550358), (8, 0.636336), (9, -0.099468)],
            &[
                (8, -0.018397),
                (9, 0.167167),
                (10, 0.939710),
                (11, -0.088480),
            ],
            &[(11, -0.070932), (12, 0.968310), (13, 0.102621)],
        ];
        for (i, row) in expect.iter().enumerate() {
            let mut nz = 0;
            for &(c, v) in row.iter() {
                assert!(
                    (w[i * 14 + c] - v).abs() < 2e-6,
                    "row {i} col {c}: {}",
                    w[i * 14 + c]
                );
            }
            for c in 0..14 {
                if w[i * 14 + c] != 0.0 {
                    nz += 1;
                }
            }
            assert_eq!(nz, row.len(), "row {i} nonzeros");
            let sum: f64 = w[i * 14..(i + 1) * 14].iter().sum();
            assert!((sum - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn matches_reference_table_48() {
        let w = axis_weights(14, 3);
        let expect: [&[(usize, f64)]; 3] = [
            &[(0, -0.033279), (1, 0.251549), (2, 0.886003), (3, -0.104273)],
            &[(5, -0.108333), (6, 0.856608), (7, 0.292650), (8, -0.040926)],
            &[
                (9, -0.026060),
                (10, 0.211682),
                (11, 0.912603),
                (12, -0.098225),
            ],
        ];
        for (i, row) in expect.iter().enumerate() {
            for &(c, v) in row.iter() {
                assert!((w[i * 14 + c] - v).abs() < 2e-6, "row {i} col {c}");
            }
        }
    }

    #[test]
    fn identity_when_sizes_match() {
        let m = interp_matrix(3, 3);
        for r in 0..9 {
            for c in 0..9 {
                assert_eq!(m[r * 9 + c], if r == c { 1.0 } else { 0.0 });
            }
        }
    }
}
