//! Percentile clip: the p_lo and p_hi percentiles (numpy's default linear interpolation) of all pixels of a
//! plate's corrected tiles, per channel, then x ↦ clamp((x − lo)/(hi − lo), 0, 1).
//!
//! Key decision: a histogram, never a sort of the plate. For integer data without flat-field the bins are
//! the integers 0…65535 and the result is exact. Otherwise 2^18 bins span [min, max] of the corrected values
//! and a value is read as its bin centre: the error is at most (max − min)/2^19, i.e. below 2·10^-6 of the
//! range (under one u16 step of the clipped output when the percentiles span more than ~1/8 of the range).
use anyhow::Result;

/// Bins of the float histogram.
pub const FLOAT_BINS: usize = 1 << 18;

/// A histogram over [lo, lo + width·bins).
#[derive(Clone, Debug)]
pub struct Hist {
    pub lo: f64,
    pub width: f64,
    pub exact: bool,
    pub counts: Vec<u64>,
}

impl Hist {
    /// Exact histogram of the integers 0…65535.
    pub fn integer() -> Hist {
        Hist {
            lo: 0.0,
            width: 1.0,
            exact: true,
            counts: vec![0; 65536],
        }
    }

    /// Fine histogram over [lo, hi].
    pub fn float(lo: f64, hi: f64) -> Hist {
        let span = (hi - lo).max(f64::MIN_POSITIVE * 1e6).max(hi.abs() * 1e-12);
        Hist {
            lo,
            width: span / FLOAT_BINS as f64,
            exact: false,
            counts: vec![0; FLOAT_BINS],
        }
    }

    /// Count one value; the float-to-usize cast saturates, so values below `lo` land in bin 0.
    #[inline]
    pub fn add(&mut self, v: f32) {
        let k = if self.exact {
            v as usize
        } else {
            ((v as f64 - self.lo) / self.width) as usize
        };
        let n = self.counts.len();
        self.counts[k.min(n - 1)] += 1;
    }

    pub fn merge(mut self, o: &Hist) -> Hist {
        self.counts
            .iter_mut()
            .zip(&o.counts)
            .for_each(|(a, b)| *a += b);
        self
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn value(&self, bin: usize) -> f64 {
        if self.exact {
            bin as f64
        } else {
            self.lo + (bin as f64 + 0.5) * self.width
        }
    }

    /// numpy.percentile(values, p) with the default linear interpolation, from the histogram.
    pub fn percentile(&self, p: f64) -> Result<f64> {
        let n = self.total();
        anyhow::ensure!(n > 0, "percentile of no pixels");
        let h = (p / 100.0) * (n - 1) as f64;
        let k = h.floor() as u64;
        let t = h - k as f64;
        let (mut a, mut b) = (None, None);
        let mut acc = 0u64;
        for (bin, &c) in self.counts.iter().enumerate() {
            acc += c;
            if a.is_none() && acc > k {
                a = Some(self.value(bin));
            }
            if acc > (k + 1).min(n - 1) {
                b = Some(self.value(bin));
                break;
            }
        }
        let (a, b) = (a.unwrap(), b.unwrap());
        // numpy's _lerp: a + (b − a)·t, computed from the upper end when t ≥ 0.5.
        let d = b - a;
        Ok(if t >= 0.5 {
            b - d * (1.0 - t)
        } else {
            a + d * t
        })
    }
}

/// Clip and rescale to u16 unorm: round(clamp((x − lo)/(hi − lo), 0, 1)·65535); 0 when hi ≤ lo.
#[inline]
pub fn clip_unorm(x: f32, lo: f64, hi: f64) -> u16 {
    if hi <= lo {
        return 0;
    }
    let y = ((x as f64 - lo) / (hi - lo)).clamp(0.0, 1.0) * 65535.0;
    // round half away from zero for y ≥ 0, without a libm call: truncate, then compare the exact fraction.
    let t = y as u32;
    (t + (y - t as f64 >= 0.5) as u32) as u16
}
