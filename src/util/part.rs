//! Job parts (`--shard I/N`): one of N independent processes (a Slurm array task) doing a contiguous
//! slice of a job. Ingest splits its tiles this way and embed its cells; `store merge` and `embed merge`
//! join the parts. (Not to be confused with the store's data files `shard-NNNNN.bin`.)
//!
//! Key decision: a part is a contiguous range of the one-process order, so joining the parts in part order
//! restores that order exactly, and the ranges differ in length by at most one item.
use anyhow::{bail, Context, Result};
use std::ops::Range;

/// The Slurm variable that supplies `I` when `--shard` is given as `N` alone.
pub const SLURM_TASK_VAR: &str = "SLURM_ARRAY_TASK_ID";

/// Part `index` (0-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobPart {
    pub index: usize,
    pub count: usize,
}

/// `--shard` text as a number ≥ 0 (`what` names the piece in errors).
fn number(flag: &str, spec: &str, what: &str, text: &str) -> Result<usize> {
    text.trim().parse::<usize>().with_context(|| {
        format!(
            "{flag} {spec:?}: {what} {text:?} is not a non-negative integer; expected I/N (part I of N, \
             0-based) or N (I from ${SLURM_TASK_VAR})"
        )
    })
}

impl JobPart {
    /// Parse `I/N`, or `N` with `I` from `$SLURM_ARRAY_TASK_ID` (read through `env`); `flag` names the
    /// option in errors. N ≥ 1 and I < N.
    pub fn parse_with(
        flag: &str,
        spec: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<JobPart> {
        let (index, count) = match spec.split_once('/') {
            Some((i, n)) => (
                number(flag, spec, "part index I", i)?,
                number(flag, spec, "part count N", n)?,
            ),
            None => {
                let count = number(flag, spec, "part count N", spec)?;
                let id = env(SLURM_TASK_VAR).with_context(|| {
                    format!(
                        "{flag} {spec}: no part index given and ${SLURM_TASK_VAR} is not set; HINT: run it as a \
                         Slurm array task (sbatch --array=0-{}) or pass {flag} I/{spec}",
                        count.saturating_sub(1)
                    )
                })?;
                let index = id.trim().parse::<usize>().with_context(|| {
                    format!(
                        "{flag} {spec}: ${SLURM_TASK_VAR} is {id:?}, not a non-negative integer"
                    )
                })?;
                (index, count)
            }
        };
        if count == 0 {
            bail!("{flag} {spec:?}: the part count N must be ≥ 1");
        }
        if index >= count {
            let from = if spec.contains('/') {
                String::new()
            } else {
                format!(" (from ${SLURM_TASK_VAR})")
            };
            bail!(
                "{flag} {spec:?}: part index {index}{from} is not below the part count {count}; parts are numbered \
                 0…{}; HINT: use sbatch --array=0-{}",
                count - 1,
                count - 1
            );
        }
        Ok(JobPart { index, count })
    }

    /// [`JobPart::parse_with`] reading the process environment.
    pub fn parse(flag: &str, spec: &str) -> Result<JobPart> {
        JobPart::parse_with(flag, spec, |k| std::env::var(k).ok())
    }

    /// This part's slice of `0..len`: `len·I/N … len·(I+1)/N` (floors), so lengths differ by at most one
    /// and the N slices cover `0..len` in order.
    pub fn range(&self, len: usize) -> Range<usize> {
        // len·k/N without overflow: u128 holds any product of two usize values.
        let wide = |x: usize| u128::try_from(x).unwrap_or(u128::MAX);
        let at = |k: usize| {
            let v = wide(len).saturating_mul(wide(k)) / wide(self.count);
            usize::try_from(v).unwrap_or(len)
        };
        at(self.index)..at(self.index + 1)
    }

    /// `part-I-of-N`, the tag in part file names.
    pub fn tag(&self) -> String {
        format!("part-{}-of-{}", self.index, self.count)
    }

    /// Parse a `part-I-of-N` tag at the end of `name` (after a `.`); None when there is none.
    pub fn from_tag(name: &str) -> Option<JobPart> {
        let tag = name.rsplit('.').next()?;
        let rest = tag.strip_prefix("part-")?;
        let (i, n) = rest.split_once("-of-")?;
        let (index, count) = (i.parse().ok()?, n.parse().ok()?);
        (index < count).then_some(JobPart { index, count })
    }

    /// Put `items` (each a job part, with a label for errors, e.g. a path) in part order, checking that
    /// they hold every index 0…N−1 exactly once, all with the same N.
    pub fn in_order<T>(
        items: Vec<T>,
        part: impl Fn(&T) -> JobPart,
        label: impl Fn(&T) -> String,
    ) -> Result<Vec<T>> {
        let Some(first) = items.first() else {
            bail!("no parts given");
        };
        let (n, first_label, first_index) = (part(first).count, label(first), part(first).index);
        let mut by_index: Vec<Option<T>> = (0..n).map(|_| None).collect();
        let given = items.len();
        for item in items {
            let p = part(&item);
            if p.count != n {
                bail!(
                    "{} is part {} of {}, but {first_label} is part {first_index} of {n}; HINT: every part must \
                     come from the same --shard I/N run",
                    label(&item),
                    p.index,
                    p.count
                );
            }
            if let Some(other) = &by_index[p.index] {
                bail!(
                    "{} and {} are both part {} of {n}; each part must be given once",
                    label(&item),
                    label(other),
                    p.index
                );
            }
            by_index[p.index] = Some(item);
        }
        let missing: Vec<String> = (0..n)
            .filter(|&k| by_index[k].is_none())
            .map(|k| k.to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "part(s) {} of {n} missing (given: {given}); HINT: wait for every array task to finish, or rerun \
                 the failed ones with --shard I/{n}",
                missing.join(", ")
            );
        }
        Ok(by_index.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_in_order_and_balance() {
        for len in [0usize, 1, 5, 7, 100] {
            for n in 1..=6 {
                let mut next = 0;
                for i in 0..n {
                    let r = JobPart { index: i, count: n }.range(len);
                    assert_eq!(r.start, next);
                    assert!(r.len() == len / n || r.len() == len / n + 1);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn parse_forms_and_errors() {
        let none = |_: &str| None;
        let env = |v: &'static str| move |_: &str| Some(v.to_string());
        assert_eq!(
            JobPart::parse_with("--shard", "2/5", none).unwrap(),
            JobPart { index: 2, count: 5 }
        );
        assert_eq!(
            JobPart::parse_with("--shard", "5", env("4")).unwrap(),
            JobPart { index: 4, count: 5 }
        );
        let err = |s: &str, e: Option<&'static str>| {
            format!(
                "{:#}",
                JobPart::parse_with("--shard", s, move |_: &str| e.map(String::from)).unwrap_err()
            )
        };
        assert!(err("3", None).contains("SLURM_ARRAY_TASK_ID is not set"));
        assert!(err("3", Some("x")).contains("\"x\", not a non-negative integer"));
        assert!(err("3", Some("3")).contains("part index 3 (from $SLURM_ARRAY_TASK_ID)"));
        assert!(err("3/3", None).contains("not below the part count 3"));
        assert!(err("a/3", None).contains("part index I \"a\""));
        assert!(err("1/0", None).contains("must be ≥ 1"));
        assert_eq!(
            JobPart::from_tag("emb/x.part-2-of-3"),
            Some(JobPart { index: 2, count: 3 })
        );
        assert_eq!(JobPart::from_tag("emb/x"), None);
    }
}
