//! Per-(batch, channel) NTC pixel statistics: mean, population std, median and MAD.
//!
//! Key decision: accumulate an exact 65,536-bin histogram of the stored u16 values, so every statistic
//! (numpy semantics: median of an even count averages the two middle values) is exact for the crops the
//! reader returns, at 512 KiB per (batch, channel) regardless of the number of cells.
use super::format::{BatchKey, BatchStats, ChannelStats};
use std::collections::BTreeMap;

/// Histograms of NTC pixel values per batch and channel.
pub struct NtcAccumulator {
    channels: usize,
    plane: usize,
    /// batch → (cells, one histogram of 65,536 bins per channel)
    hist: BTreeMap<u32, (u64, Vec<Vec<u64>>)>,
}

impl NtcAccumulator {
    /// `plane` = H·W pixels per channel.
    pub fn new(channels: usize, plane: usize) -> NtcAccumulator {
        NtcAccumulator {
            channels,
            plane,
            hist: BTreeMap::new(),
        }
    }

    /// Add one NTC crop (C, H, W) of `batch`.
    pub fn add(&mut self, batch: u32, crop: &[u16]) {
        let (channels, plane) = (self.channels, self.plane);
        let e = self
            .hist
            .entry(batch)
            .or_insert_with(|| (0, vec![vec![0u64; 65536]; channels]));
        e.0 += 1;
        for (c, h) in e.1.iter_mut().enumerate() {
            for &v in &crop[c * plane..(c + 1) * plane] {
                h[v as usize] += 1;
            }
        }
    }

    /// Statistics in unorm units (value / 65535), one entry per batch that has NTC cells, by batch id.
    pub fn finish(
        &self,
        batches: &[BatchKey],
        plates: &[String],
        wells: &[String],
    ) -> Vec<BatchStats> {
        self.hist
            .iter()
            .map(|(&b, (cells, hs))| {
                let key = batches[b as usize];
                BatchStats {
                    batch: b,
                    plate: plates[key.plate as usize].clone(),
                    well: wells[key.well as usize].clone(),
                    ntc_cells: *cells,
                    channels: hs.iter().map(|h| hist_stats(h)).collect(),
                }
            })
            .collect()
    }
}

/// Value at sorted position `k` (0-based) of the multiset a histogram describes.
pub fn hist_kth(h: &[u64], k: u64) -> usize {
    let mut acc = 0u64;
    for (v, &n) in h.iter().enumerate() {
        acc += n;
        if acc > k {
            return v;
        }
    }
    h.len() - 1
}

/// numpy-style median of a histogram, in bin units.
pub fn hist_median(h: &[u64]) -> f64 {
    let n: u64 = h.iter().sum();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        hist_kth(h, n / 2) as f64
    } else {
        0.5 * (hist_kth(h, n / 2 - 1) as f64 + hist_kth(h, n / 2) as f64)
    }
}

/// Mean, population std, median and MAD of a u16 histogram, scaled to unorm (÷65535).
pub fn hist_stats(h: &[u64]) -> ChannelStats {
    let n: u64 = h.iter().sum();
    let nf = n as f64;
    let mean = h
        .iter()
        .enumerate()
        .map(|(v, &c)| v as f64 * c as f64)
        .sum::<f64>()
        / nf;
    let var = h
        .iter()
        .enumerate()
        .map(|(v, &c)| c as f64 * (v as f64 - mean).powi(2))
        .sum::<f64>()
        / nf;
    let median = hist_median(h);
    // |v - median| doubled is an integer even when the median falls between two values.
    let m2 = (2.0 * median) as i64;
    let mut dev = vec![0u64; 2 * h.len()];
    for (v, &c) in h.iter().enumerate() {
        if c > 0 {
            dev[(2 * v as i64 - m2).unsigned_abs() as usize] += c;
        }
    }
    let mad = hist_median(&dev) / 2.0;
    let s = 1.0 / 65535.0;
    ChannelStats {
        mean: mean * s,
        std: var.sqrt() * s,
        median: median * s,
        mad: mad * s,
    }
}
