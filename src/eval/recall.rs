//! Biological recall on consensus profiles (evaluation.md §3): the null of all gene-pair similarities,
//! one- and two-tailed recall at 5 % and 10 %, the precision–recall curve, pr_auc and the KS statistic.
//!
//! Key decisions: the null is held once, sorted, in f64 (12.5 M pairs = 100 MB for 5 k genes), so every
//! percentile is an exact rank (`searchsorted` left/right) rather than a streamed quantile; query
//! similarities are taken from the same computed values, so a related pair and its null entry are equal.
//! The thresholds are the literal pairs (0.05, 0.95) and (0.1, 0.9), as EFAAR writes them.
use super::knn::map_rows;
use rayon::prelude::*;

/// The null of all unordered distinct gene pairs (ascending) and the query similarities (in the order
/// of `pairs`). z: (G, d) unit rows; pairs: (i, j) row indices, i ≠ j.
pub fn null_and_query(
    z: &[f64],
    g: usize,
    d: usize,
    pairs: &[(u32, u32)],
    progress: &dyn Fn(usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let rows: Vec<Vec<f64>> = map_rows(z, g, z, g, d, |i, s| s[i + 1..].to_vec(), progress);
    let query = pairs
        .iter()
        .map(|&(a, b)| {
            let (i, j) = (a.min(b) as usize, a.max(b) as usize);
            rows[i][j - i - 1]
        })
        .collect();
    let mut null = Vec::with_capacity(g * g.saturating_sub(1) / 2);
    for r in rows {
        null.extend_from_slice(&r);
    }
    null.par_sort_unstable_by(f64::total_cmp);
    (null, query)
}

/// Number of null values strictly below q (sorted ascending null).
pub fn below(null: &[f64], q: f64) -> usize {
    null.partition_point(|&x| x < q)
}

/// Number of null values ≤ q.
pub fn at_most(null: &[f64], q: f64) -> usize {
    null.partition_point(|&x| x <= q)
}

/// One-tailed: q is in the top p when below(q) / |null| ≥ hi (hi = 1 − p, written as a literal).
pub fn in_top(null: &[f64], q: f64, hi: f64) -> bool {
    below(null, q) as f64 / null.len() as f64 >= hi
}

/// Fraction of queries in the top (one-tailed, threshold hi = 1 − p).
pub fn recall_one_tailed(null: &[f64], query: &[f64], hi: f64) -> f64 {
    query.iter().filter(|&&q| in_top(null, q, hi)).count() as f64 / query.len() as f64
}

/// EFAAR `compute_recall` for the threshold pair (lo, hi): a query counts when at_most(q)/|null| ≤ lo
/// or below(q)/|null| ≥ hi.
pub fn recall_two_tailed(null: &[f64], query: &[f64], lo: f64, hi: f64) -> f64 {
    let n = null.len() as f64;
    query
        .iter()
        .filter(|&&q| at_most(null, q) as f64 / n <= lo || below(null, q) as f64 / n >= hi)
        .count() as f64
        / query.len() as f64
}

/// One point of the precision–recall curve at the top `top_percent` % of the null.
#[derive(Clone, Debug)]
pub struct PrPoint {
    pub top_percent: u32,
    /// The smallest similarity counted as "above".
    pub threshold: f64,
    pub n_above: usize,
    pub related_above: usize,
    pub precision: f64,
    pub recall: f64,
}

/// PR curve at the top 1 %, …, 20 % of the null; "above" means in the top as `in_top` decides.
pub fn pr_curve(null: &[f64], query: &[f64]) -> Vec<PrPoint> {
    let n = null.len();
    (1..=20u32)
        .map(|pc| {
            // (100 − pc) / 100 is the correctly rounded decimal, so 5 % and 10 % equal recall_top5/10.
            let hi = (100 - pc) as f64 / 100.0;
            // below(null[j]) is non-decreasing in j: the first j in the top starts the counted tail.
            let (mut j0, mut end) = (0, n);
            while j0 < end {
                let mid = (j0 + end) / 2;
                if in_top(null, null[mid], hi) {
                    end = mid;
                } else {
                    j0 = mid + 1;
                }
            }
            let n_above = n - j0;
            let related_above = query.iter().filter(|&&q| in_top(null, q, hi)).count();
            PrPoint {
                top_percent: pc,
                threshold: if j0 < n { null[j0] } else { f64::INFINITY },
                n_above,
                related_above,
                precision: if n_above == 0 {
                    f64::NAN
                } else {
                    related_above as f64 / n_above as f64
                },
                recall: related_above as f64 / query.len() as f64,
            }
        })
        .collect()
}

/// scikit-learn `average_precision_score` of the ranking of all null pairs (ascending null) by
/// descending similarity with the query pairs (ascending, a sub-multiset of the null) as positives:
/// Σ_k (R_k − R_{k−1}) · P_k over distinct similarity thresholds, equal similarities grouped.
pub fn average_precision(null: &[f64], query: &[f64]) -> f64 {
    let p = query.len();
    if p == 0 {
        return f64::NAN;
    }
    let (mut i, mut q) = (null.len(), query.len());
    let (mut tp, mut all) = (0usize, 0usize);
    let (mut ap, mut prev_r) = (0.0, 0.0);
    while i > 0 {
        let v = null[i - 1];
        while i > 0 && null[i - 1] == v {
            i -= 1;
            all += 1;
        }
        while q > 0 && query[q - 1] >= v {
            q -= 1;
            tp += 1;
        }
        let r = tp as f64 / p as f64;
        ap += (r - prev_r) * (tp as f64 / all as f64);
        prev_r = r;
    }
    ap
}

/// Two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b| (scipy `ks_2samp`), both sorted ascending.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => unreachable!(),
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    d
}

/// Counts of values per bin of width 2/bins over [−1, 1] (values outside are clamped into the ends).
pub fn histogram(v: &[f64], bins: usize) -> Vec<u64> {
    let mut h = vec![0u64; bins];
    for &x in v {
        let b = (((x + 1.0) / 2.0) * bins as f64).floor();
        h[(b.max(0.0) as usize).min(bins - 1)] += 1;
    }
    h
}

/// All recall-section numbers.
#[derive(Clone, Debug)]
pub struct RecallMetrics {
    pub n_null: usize,
    pub n_query: usize,
    pub recall_top5: f64,
    pub recall_top10: f64,
    pub recall2_5: f64,
    pub recall2_10: f64,
    pub pr_auc: f64,
    pub ks: f64,
    pub pr_curve: Vec<PrPoint>,
}

/// The metrics from an ascending null and the query similarities (any order). NaN when there is no
/// query pair or no null.
pub fn metrics(null: &[f64], query: &[f64]) -> RecallMetrics {
    let mut q = query.to_vec();
    q.sort_by(f64::total_cmp);
    let nan = null.is_empty() || q.is_empty();
    let f = |v: f64| if nan { f64::NAN } else { v };
    RecallMetrics {
        n_null: null.len(),
        n_query: q.len(),
        recall_top5: f(if nan {
            0.0
        } else {
            recall_one_tailed(null, &q, 0.95)
        }),
        recall_top10: f(if nan {
            0.0
        } else {
            recall_one_tailed(null, &q, 0.9)
        }),
        recall2_5: f(if nan {
            0.0
        } else {
            recall_two_tailed(null, &q, 0.05, 0.95)
        }),
        recall2_10: f(if nan {
            0.0
        } else {
            recall_two_tailed(null, &q, 0.1, 0.9)
        }),
        pr_auc: f(if nan {
            0.0
        } else {
            average_precision(null, &q)
        }),
        ks: f(if nan { 0.0 } else { ks_statistic(&q, null) }),
        pr_curve: if nan { Vec::new() } else { pr_curve(null, &q) },
    }
}
