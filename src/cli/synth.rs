//! `setdino synth`: argument handling only; the work is in `crate::synth`.
use crate::synth::{synth, SynthConfig};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Write a synthetic screen with known ground truth: TIFF tiles, tiles.csv, cells.csv, complexes.tsv, truth.json.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// demo (seconds, crop 48), small (minutes, crop 96) or large (a store bigger than RAM).
    #[arg(long, default_value = "demo")]
    pub preset: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Strength of the per-well and per-plate confounders that per-well affine normalisation cannot undo:
    /// anisotropic and per-channel blur, staining gamma and saturation, background texture and debris,
    /// cell density (count, size and shape), channel bleed-through. It multiplies all their amplitudes:
    /// 0 = none, 1 = the default, larger = stronger (at most 4). Gain, offset, noise and illumination stay.
    #[arg(long, default_value_t = 1.0)]
    pub confound: f32,
}

pub fn run(a: SynthArgs) -> Result<()> {
    let cfg = SynthConfig {
        confound: a.confound,
        ..SynthConfig::preset(&a.preset, a.seed)?
    };
    let t0 = std::time::Instant::now();
    let s = synth(&cfg, &a.out, true)?;
    println!(
        "synth {}: {} tiles, {} cells, {} genes in {:.1} s → {}\nnext: setdino ingest --tiles {}/tiles.csv --cells {}/cells.csv --channels {} --crop {} --out STORE",
        a.preset,
        s.tiles,
        s.cells,
        s.genes,
        t0.elapsed().as_secs_f64(),
        a.out.display(),
        a.out.display(),
        a.out.display(),
        crate::synth::CHANNELS.join(","),
        s.crop
    );
    Ok(())
}
