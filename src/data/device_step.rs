//! A training step's crops augmented on the device (issue 14 item 3): the CPU side only reads the store
//! and draws the parameters; the device renders and normalises every crop with `augment.cu`.
//!
//! Key decisions: (1) the same parameters as the CPU path — each crop's `CropParams` comes from
//! `augment::crop_params` with the same (seed, step, set, cell, crop) key, so the device crops equal the
//! CPU path's to the renderer's rounding (x^γ: the data path's table-based power vs powf, ≤ 5e-6 before
//! normalisation; tests/datapath/augment.rs and tests/parity/augment.rs). (2) Each distinct cell's
//! stored crop goes up once, however many crops it feeds (1 global + L/2 local): with the reference
//! geometry (96 px store crops, 96/48 px views, 8 locals) that is half the values of the rendered crops.
//! (3) Those values go up as the store keeps them, u16 (`Backend::upload_u16`, two per word on the GPU):
//! half the bytes again, a quarter of the f32 crops in all.
use super::augment::{
    check_step, crop_index_global, crop_index_local, crop_params, AugmentConfig, CropParams,
};
use super::normalize::{NormKind, Normalizer};
use super::sampler::SetDraw;
use crate::backend::Backend;
use crate::engine::StepBatch;
use crate::store::Store;
use anyhow::Result;

/// One step's inputs for augmentation on the device, set-major like `StepCrops`.
#[derive(Clone, Debug, Default)]
pub struct RawStep {
    /// (cells, C, crop, crop): each distinct cell's stored crop once, as stored (u16).
    pub cells: Vec<u16>,
    /// (2R, 8 + 2C) and (L·R, 8 + 2C): the `augment_render` record of every crop (its `cell` indexes
    /// `cells`).
    pub global_params: Vec<f32>,
    pub local_params: Vec<f32>,
    /// (2R, C, 2) and (L·R, C, 2): per crop and channel (mean, 1 / divisor) of its batch's NTC
    /// statistics; empty unless the normaliser is `ntc`.
    pub global_stats: Vec<f32>,
    pub local_stats: Vec<f32>,
    pub norm: Option<NormKind>,
    pub sets: usize,
    pub set_size: usize,
    pub channels: usize,
    pub crop: usize,
    pub global_size: usize,
    pub local_size: usize,
    pub n_local: usize,
}

impl RawStep {
    /// Words of the rendered global and local crop buffers: (2R, C, G, G) and (L·R, C, l, l), 0 for the
    /// local ones without local crops.
    pub fn crop_words(&self) -> (usize, usize) {
        let (r, c) = (self.sets * self.set_size, self.channels);
        let local = match self.n_local {
            0 => 0,
            nl => nl * r * c * self.local_size * self.local_size,
        };
        (2 * r * c * self.global_size * self.global_size, local)
    }
}

/// The `augment_render` record of `p` reading source cell `cell`: [flip_ud, flip_lr, rot90, r0, rows,
/// c0, cols, cell, gamma[C], offset[C]].
pub fn render_record(p: &CropParams, cell: usize, out: &mut Vec<f32>) {
    out.extend([
        f32::from(u8::from(p.d4.flip_ud)),
        f32::from(u8::from(p.d4.flip_lr)),
        f32::from(u8::from(p.d4.rot90)),
        p.r0 as f32,
        p.rows as f32,
        p.c0 as f32,
        p.cols as f32,
        cell as f32,
    ]);
    out.extend(&p.gamma);
    out.extend(&p.offset);
}

/// [`RawStep`] of the sets `draws` (the step's sets `first_set …`, as `make_step_part_into` takes them).
pub fn make_raw_step_part_into(
    store: &Store,
    draws: &[SetDraw],
    first_set: usize,
    cfg: &AugmentConfig,
    norm: &Normalizer,
    step: u64,
    out: &mut RawStep,
) -> Result<()> {
    let (n, distinct) = check_step(store, draws, cfg, norm)?;
    let (c, crop) = (store.channels(), store.crop());
    let (g, lsz, nl) = (cfg.global_size, cfg.local_size, cfg.n_local);
    let r = draws.len() * n;
    out.cells.clear();
    for &k in &distinct {
        out.cells
            .extend_from_slice(store.crop_u16_unchecked(k as usize));
    }
    let ntc = matches!(norm.kind, NormKind::Ntc { .. });
    let index = |cell: u32| distinct.binary_search(&cell).unwrap_or(0);
    let fill = |crops: usize, params: &mut Vec<f32>, stats: &mut Vec<f32>, local: bool| {
        params.clear();
        stats.clear();
        for u in 0..crops {
            let (which, row) = (u / r, u % r);
            let (s, k) = (row / n, row % n);
            let (view, key) = if local {
                (which / (nl / 2).max(1), crop_index_local(which))
            } else {
                (which, crop_index_global(which))
            };
            let cell = draws[s].cells[view][k];
            let p = crop_params(cfg, crop, c, step, first_set + s, k, key);
            render_record(&p, index(cell), params);
            if ntc {
                let batch = store.record(cell as usize).batch;
                for &(m, inv) in norm.ntc_stats(batch).unwrap_or(&[]) {
                    stats.extend([m, inv]);
                }
            }
        }
    };
    fill(2 * r, &mut out.global_params, &mut out.global_stats, false);
    fill(nl * r, &mut out.local_params, &mut out.local_stats, true);
    (
        out.norm,
        out.sets,
        out.set_size,
        out.channels,
        out.crop,
        out.global_size,
        out.local_size,
        out.n_local,
    ) = (Some(norm.kind), draws.len(), n, c, crop, g, lsz, nl);
    Ok(())
}

/// The step's crops rendered and normalised on `be` from `raw` into new buffers ([`render_into`]).
pub fn render_on<B: Backend>(be: &B, raw: &RawStep) -> Result<StepBatch<B>> {
    let (global, local) = raw.crop_words();
    let mut batch = StepBatch {
        global: be.uninit(global)?, // written whole by the renderer
        local: match local {
            0 => None,
            n => Some(be.uninit(n)?),
        },
        sets: raw.sets,
        set_size: raw.set_size,
        n_local: raw.n_local,
    };
    render_into(be, raw, &mut batch)?;
    Ok(batch)
}

/// The step's crops rendered and normalised on `be` from `raw`, written whole into `dst`'s buffers (a
/// captured step's inputs: `Engine::train_step_from`): one upload (`Backend::upload_step_inputs`: the
/// raw crops and, per group, the parameter records and NTC statistics; on a GPU from page-locked memory
/// on a second stream), then the renders, which read the uploaded buffers at once.
pub fn render_into<B: Backend>(be: &B, raw: &RawStep, dst: &mut StepBatch<B>) -> Result<()> {
    let (c, r) = (raw.channels, raw.sets * raw.set_size);
    let (global, local) = raw.crop_words();
    anyhow::ensure!(
        (dst.sets, dst.set_size, dst.n_local) == (raw.sets, raw.set_size, raw.n_local)
            && be.buf_len(&dst.global) == global
            && dst.local.as_ref().map_or(0, |l| be.buf_len(l)) == local,
        "render_into: the destination's shape differs from the step's ({} sets × {} cells, {} local crops)",
        raw.sets,
        raw.set_size,
        raw.n_local
    );
    let (src, parts) = be.upload_step_inputs(
        &raw.cells,
        &[
            &raw.global_params,
            &raw.local_params,
            &raw.global_stats,
            &raw.local_stats,
        ],
    )?;
    let [gp, lp, gs, ls] = <[B::Buf; 4]>::try_from(parts)
        .map_err(|p| anyhow::anyhow!("{} input parts, expected 4", p.len()))?;
    let group =
        |out: &mut B::Buf, crops: usize, size: usize, p: &B::Buf, st: &B::Buf| -> Result<()> {
            if crops == 0 {
                return Ok(());
            }
            be.augment_render(out, &src, p, crops, c, raw.crop, size)?;
            match raw.norm {
                Some(NormKind::Ntc { .. }) => {
                    be.augment_normalize_ntc(out, st, crops, c, size * size)?;
                }
                Some(NormKind::Zscore) => {
                    be.augment_normalize_zscore(out, crops, c, size * size)?
                }
                Some(NormKind::None) | None => {}
            }
            Ok(())
        };
    group(&mut dst.global, 2 * r, raw.global_size, &gp, &gs)?;
    if let Some(l) = dst.local.as_mut() {
        group(l, raw.n_local * r, raw.local_size, &lp, &ls)?;
    }
    Ok(())
}
