//! Normalisers applied after augmentation (algorithm.md §7.3): per-image z-score, or NTC z-score with the
//! (plate, well) statistics of non-targeting cells.
//!
//! Key decision: `ntc` divides by σ + 1e-6 by default; `compat_2sigma` reproduces the reference's
//! `ntc_std += ntc_std + 1e-6`, i.e. 2σ + 1e-6 (a global factor ½, needed only for exact reproduction).
use crate::store::Store;
use anyhow::{bail, Result};

/// Which normaliser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NormKind {
    /// Leave values in [0, 1].
    None,
    /// Per image and channel: (x − mean) / (std + 1e-6), population std.
    Zscore,
    /// Per channel: (x − μ_ntc) / (σ_ntc + 1e-6), or / (2σ_ntc + 1e-6) with `compat_2sigma`.
    Ntc { compat_2sigma: bool },
}

impl std::str::FromStr for NormKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(NormKind::None),
            "zscore" => Ok(NormKind::Zscore),
            "ntc" => Ok(NormKind::Ntc {
                compat_2sigma: false,
            }),
            "ntc-2sigma" | "ntc_2sigma" => Ok(NormKind::Ntc {
                compat_2sigma: true,
            }),
            _ => bail!("normaliser {s:?}: expected none, zscore, ntc or ntc-2sigma"),
        }
    }
}

/// A normaliser bound to a store's NTC statistics.
#[derive(Clone, Debug)]
pub struct Normalizer {
    pub kind: NormKind,
    /// Per batch: per-channel (mean, 1 / divisor), when the batch has NTC statistics.
    ntc: Vec<Option<Vec<(f32, f32)>>>,
    batch_names: Vec<String>,
}

impl Normalizer {
    pub fn new(kind: NormKind, store: &Store) -> Normalizer {
        let m = store.manifest();
        let ntc = (0..m.batches.len() as u32)
            .map(|b| {
                store.batch_stats(b).map(|s| {
                    s.channels
                        .iter()
                        .map(|c| {
                            let div = match kind {
                                NormKind::Ntc {
                                    compat_2sigma: true,
                                } => 2.0 * c.std + 1e-6,
                                _ => c.std + 1e-6,
                            };
                            (c.mean as f32, (1.0 / div) as f32)
                        })
                        .collect()
                })
            })
            .collect();
        let batch_names = (0..m.batches.len() as u32)
            .map(|b| m.batch_name(b))
            .collect();
        Normalizer {
            kind,
            ntc,
            batch_names,
        }
    }

    /// Check that every batch in `batches` can be normalised (NTC statistics exist where needed).
    pub fn check_batches(&self, batches: impl IntoIterator<Item = u32>) -> Result<()> {
        if let NormKind::Ntc { .. } = self.kind {
            for b in batches {
                if self.ntc.get(b as usize).is_none_or(|s| s.is_none()) {
                    bail!(
                        "batch {} has no NTC cells, so the `ntc` normaliser has no statistics for it; HINT: use the \
                         zscore normaliser or exclude that well",
                        self.batch_names.get(b as usize).map_or("?", |s| s.as_str())
                    );
                }
            }
        }
        Ok(())
    }

    /// Per channel (mean, 1 / divisor) of `batch`'s NTC statistics, if it has them.
    pub fn ntc_stats(&self, batch: u32) -> Option<&[(f32, f32)]> {
        self.ntc.get(batch as usize)?.as_deref()
    }

    /// Normalise one image in place. img: (C, P) with P pixels per channel; `batch` selects NTC statistics.
    pub fn apply(&self, batch: u32, img: &mut [f32], channels: usize) -> Result<()> {
        let p = img.len() / channels;
        match self.kind {
            NormKind::None => {}
            NormKind::Zscore => {
                for ch in img.chunks_mut(p) {
                    let n = ch.len() as f64;
                    let mean = ch.iter().map(|&x| x as f64).sum::<f64>() / n;
                    let var = ch.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
                    let (m, inv) = (mean as f32, (1.0 / (var.sqrt() + 1e-6)) as f32);
                    ch.iter_mut().for_each(|x| *x = (*x - m) * inv);
                }
            }
            NormKind::Ntc { .. } => {
                self.check_batches([batch])?;
                let st = self.ntc[batch as usize].as_ref().unwrap();
                for (ch, &(m, inv)) in img.chunks_mut(p).zip(st) {
                    ch.iter_mut().for_each(|x| *x = (*x - m) * inv);
                }
            }
        }
        Ok(())
    }
}
