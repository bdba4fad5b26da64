//! Exact cosine similarity in row blocks, the kNN lists with their tie rule, and the leave-one-out
//! KNN@5 vote (evaluation.md §2).
//!
//! Key decisions: rows are L2-normalised in f64 (a row of norm < 1e-12 becomes zero, so its
//! similarity to anything is 0); one block of query rows × all rows is formed at a time by a GEMM
//! (about 64 MB), and a caller-supplied function reduces each similarity row to what it needs (top-k,
//! AP), so no n² matrix exists at once. Ordering is (similarity descending, row index ascending).
use rayon::prelude::*;

/// Rows of x: (n, d) f32 scaled to unit L2 norm, in f64; rows with norm < 1e-12 become zero.
pub fn unit_rows(x: &[f32], n: usize, d: usize) -> Vec<f64> {
    let mut z: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    z.par_chunks_mut(d.max(1)).take(n).for_each(|r| {
        let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm < 1e-12 {
            r.iter_mut().for_each(|v| *v = 0.0);
        } else {
            r.iter_mut().for_each(|v| *v /= norm);
        }
    });
    z
}

/// Cosine similarity of two vectors: dot / (|a| |b|), 0 if either norm is below 1e-12.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let (na, nb) = (
        a.iter().map(|v| v * v).sum::<f64>().sqrt(),
        b.iter().map(|v| v * v).sum::<f64>().sqrt(),
    );
    if na < 1e-12 || nb < 1e-12 {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (na * nb)
}

/// Rows per block so that a block of similarities (rows × n f64) stays near 64 MB.
pub fn block_rows(n: usize) -> usize {
    ((8usize << 20) / n.max(1)).clamp(1, 4096)
}

/// For every query row i in 0..m of a: (m, d), the similarity row s_i = a_i · bᵀ: (n) against
/// b: (n, d) (both unit rows), reduced by f(i, s_i). Results in row order. `progress(done, m)` is
/// called after each block.
pub fn map_rows<T: Send>(
    a: &[f64],
    m: usize,
    b: &[f64],
    n: usize,
    d: usize,
    f: impl Fn(usize, &[f64]) -> T + Sync,
    progress: &dyn Fn(usize, usize),
) -> Vec<T> {
    let br = block_rows(n);
    let mut out = Vec::with_capacity(m);
    let mut s = vec![0.0f64; br.min(m.max(1)) * n];
    for r0 in (0..m).step_by(br) {
        let rows = br.min(m - r0);
        if n > 0 && d > 0 {
            // SAFETY: dst (rows, n) row-major inside s; lhs rows r0..r0+rows of a (row stride d);
            // rhs[k][j] = b[j·d + k] is the (d, n) view of bᵀ. Every index is inside its slice.
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    d,
                    s.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a[r0 * d..].as_ptr(),
                    1,
                    d as isize,
                    b.as_ptr(),
                    d as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(rayon::current_num_threads()),
                );
            }
        } else {
            s.iter_mut().for_each(|v| *v = 0.0);
        }
        let part: Vec<T> = s[..rows * n]
            .par_chunks(n.max(1))
            .enumerate()
            .map(|(r, row)| f(r0 + r, &row[..n]))
            .collect();
        out.extend(part);
        progress(r0 + rows, m);
    }
    out
}

/// The k most similar rows to `me` in `sims` (never `me` itself), ordered by similarity descending and,
/// for equal similarities, by row index ascending (so a tie at the last place goes to the lower index).
pub fn top_k(sims: &[f64], me: usize, k: usize) -> Vec<(u32, f64)> {
    let mut best: Vec<(u32, f64)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (j, &s) in sims.iter().enumerate() {
        if j == me {
            continue;
        }
        if best.len() == k && s <= best[k - 1].1 {
            continue;
        }
        let pos = best.partition_point(|&(_, t)| t >= s);
        best.insert(pos, (j as u32, s));
        best.truncate(k);
    }
    best
}

/// Neighbour lists: lists: (n) of up to k (row index, similarity) in `top_k` order; a list is shorter
/// than k only when n ≤ k.
#[derive(Clone, Debug, Default)]
pub struct Neighbors {
    pub k: usize,
    pub lists: Vec<Vec<(u32, f64)>>,
}

/// Unweighted majority vote of neighbour labels given in similarity order, with sims: the same
/// length. Ties between labels go to the largest summed similarity, then to the label met first.
/// Returns None for an empty list.
pub fn vote(labels: &[u32], sims: &[f64]) -> Option<u32> {
    // (label, count, summed similarity, first position)
    let mut tally: Vec<(u32, usize, f64, usize)> = Vec::new();
    for (p, (&l, &s)) in labels.iter().zip(sims).enumerate() {
        match tally.iter_mut().find(|t| t.0 == l) {
            Some(t) => {
                t.1 += 1;
                t.2 += s;
            }
            None => tally.push((l, 1, s, p)),
        }
    }
    tally
        .into_iter()
        .reduce(|best, t| {
            let better = t.1 > best.1
                || (t.1 == best.1 && (t.2 > best.2 || (t.2 == best.2 && t.3 < best.3)));
            if better {
                t
            } else {
                best
            }
        })
        .map(|t| t.0)
}

/// Leave-one-out KNN accuracy: for each node i with query[i], predict its label by `vote` over its
/// neighbours' labels. Returns (accuracy over queries, per-node correctness: Some(hit) for queries).
/// Accuracy is NaN when there is no query.
pub fn knn_accuracy(nb: &Neighbors, label: &[u32], query: &[bool]) -> (f64, Vec<Option<bool>>) {
    let hits: Vec<Option<bool>> = nb
        .lists
        .iter()
        .enumerate()
        .map(|(i, list)| {
            if !query[i] {
                return None;
            }
            let l: Vec<u32> = list.iter().map(|&(j, _)| label[j as usize]).collect();
            let s: Vec<f64> = list.iter().map(|&(_, s)| s).collect();
            Some(vote(&l, &s) == Some(label[i]))
        })
        .collect();
    let q = hits.iter().flatten().count();
    let h = hits.iter().flatten().filter(|&&b| b).count();
    let acc = if q == 0 {
        f64::NAN
    } else {
        h as f64 / q as f64
    };
    (acc, hits)
}
