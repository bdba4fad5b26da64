//! Reproducibility mAP with copairs semantics (evaluation.md §2): per query, positives are the same
//! entity in other batches, negatives are other genes, everything else is left out.
//!
//! Key decision: candidates are ranked by copairs' own sort key `1 − similarity` ascending, with
//! positives first among equal keys (copairs' stable `lexsort` over positives-then-negatives), so even
//! similarities that collapse to the same key rank as copairs ranks them. One pass over the similarity
//! row per query: O(n log |positives|), no sort of the row.

/// How a candidate relates to the query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rel {
    Pos,
    Neg,
    Skip,
}

/// Average precision of one query from its similarity row: sims: (n), rel(j) classifies candidate j
/// (the query itself must be Skip). AP = mean over positives of precision at the positive's rank.
/// None when the query has no positive.
pub fn average_precision(sims: &[f64], rel: impl Fn(usize) -> Rel) -> Option<f64> {
    let mut pos: Vec<f64> = sims
        .iter()
        .enumerate()
        .filter(|&(j, _)| rel(j) == Rel::Pos)
        .map(|(_, &s)| 1.0 - s)
        .collect();
    if pos.is_empty() {
        return None;
    }
    pos.sort_by(f64::total_cmp);
    // ahead[t]: negatives that rank after exactly t positives (key ≥ the t-th positive's key, < the next).
    let mut ahead = vec![0usize; pos.len() + 1];
    for (j, &s) in sims.iter().enumerate() {
        if rel(j) == Rel::Neg {
            let key = 1.0 - s;
            ahead[pos.partition_point(|&p| p <= key)] += 1;
        }
    }
    let mut neg_before = 0usize;
    let mut ap = 0.0;
    for (i, a) in ahead[..pos.len()].iter().enumerate() {
        neg_before += a;
        ap += (i + 1) as f64 / (i + 1 + neg_before) as f64;
    }
    Some(ap / pos.len() as f64)
}

/// The relation rule of evaluation.md §2 for nodes with entity (`pos_key`: gene, or sgRNA at
/// `--level sgrna`), gene (`neg_key`) and batch labels: positive = same entity, other batch; negative
/// = other gene; otherwise (the query itself, same entity in the same batch, another sgRNA of the same
/// gene) left out.
pub fn relation(pos_key: &[u32], neg_key: &[u32], batch: &[u32], i: usize, j: usize) -> Rel {
    if i == j {
        Rel::Skip
    } else if neg_key[j] != neg_key[i] {
        Rel::Neg
    } else if pos_key[j] == pos_key[i] && batch[j] != batch[i] {
        Rel::Pos
    } else {
        Rel::Skip
    }
}

/// Mean of the defined APs, grouped by `group` (e.g. gene): (overall mAP, per-group mean AP and number
/// of queries with positives). NaN where nothing is defined.
pub fn mean_ap(ap: &[Option<f64>], group: &[u32], n_groups: usize) -> (f64, Vec<(f64, usize)>) {
    let mut sum = vec![0.0; n_groups];
    let mut cnt = vec![0usize; n_groups];
    let (mut tot, mut n) = (0.0, 0usize);
    for (a, &g) in ap.iter().zip(group) {
        if let Some(a) = a {
            sum[g as usize] += a;
            cnt[g as usize] += 1;
            tot += a;
            n += 1;
        }
    }
    let per = sum
        .iter()
        .zip(&cnt)
        .map(|(&s, &c)| (if c == 0 { f64::NAN } else { s / c as f64 }, c))
        .collect();
    (if n == 0 { f64::NAN } else { tot / n as f64 }, per)
}
