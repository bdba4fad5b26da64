//! Unit tests of the generator: recall ceiling, effect directions, point spread, confounder sampling, and
//! that the confounders survive a per-well affine normalisation.
use super::confound::aniso_blur;
use super::*;

/// A screen of NTC cells only: 4 wells of one plate, 256² tiles, about 25 tiles a well.
fn ntc_cfg(seed: u64, confound: f32) -> SynthConfig {
    SynthConfig {
        plates: 1,
        wells: 4,
        complexes: 0,
        null_genes: 0,
        cells_per_guide: 80,
        confound,
        ..SynthConfig::preset("demo", seed).unwrap()
    }
}

/// A rendered tile: f32 pages (4, T·T) and cell centroids.
type Tile = (Vec<Vec<f32>>, Vec<(f32, f32)>);

/// Every tile of every well.
fn render_wells(cfg: &SynthConfig) -> Vec<Vec<Tile>> {
    let genes = genes(cfg);
    let wells = wells(cfg);
    let jobs = tile_jobs(cfg, &genes, &wells).unwrap();
    let mut out = vec![Vec::new(); wells.len()];
    for (key, (w, _, cells)) in jobs.iter().enumerate() {
        let (pages, cents) = render_tile(cfg, &genes, &wells[*w], cells, key as u64);
        out[*w].push((
            pages
                .into_iter()
                .map(|p| p.into_iter().map(f32::from).collect())
                .collect(),
            cents.into_iter().map(|(y, x, _)| (y, x)).collect(),
        ));
    }
    out
}

/// Mean over 4×4 blocks of a (T, T) image: (T/4, T/4).
fn bin4(img: &[f64], t: usize) -> Vec<f64> {
    let b = t / 4;
    let mut out = vec![0f64; b * b];
    for y in 0..b * 4 {
        for x in 0..b * 4 {
            out[(y / 4) * b + x / 4] += img[y * t + x] / 16.0;
        }
    }
    out
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n)
}

/// Non-affine statistics of two halves (even, odd tiles) of each well after a per-well, per-channel affine
/// normalisation (z-scores over the well's pixels). Per channel: skewness and fraction above z = 1 of the
/// 4×4-binned image (binning averages the camera noise away), and the gradient anisotropy
/// ln(Σ ∂x² / Σ ∂y²); then the binned DNA–damage and actin–tubulin correlations. Returns
/// [well][half][statistic].
fn half_stats(tiles: &[Vec<Tile>], t: usize) -> Vec<[Vec<f64>; 2]> {
    tiles
        .iter()
        .map(|well| {
            let nc = well[0].0.len();
            let norm: Vec<(f64, f64)> = (0..nc)
                .map(|c| {
                    let all: Vec<f64> = well
                        .iter()
                        .flat_map(|p| &p.0[c])
                        .map(|&v| f64::from(v))
                        .collect();
                    let (m, v) = mean_var(&all);
                    (m, v.sqrt().max(1e-9))
                })
                .collect();
            let half = |h: usize| -> Vec<f64> {
                // z: [tile][channel] (T·T); zb: binned.
                let z: Vec<Vec<Vec<f64>>> = well
                    .iter()
                    .skip(h)
                    .step_by(2)
                    .map(|(p, _)| {
                        (0..nc)
                            .map(|c| {
                                p[c].iter()
                                    .map(|&v| (f64::from(v) - norm[c].0) / norm[c].1)
                                    .collect()
                            })
                            .collect()
                    })
                    .collect();
                let zb: Vec<Vec<Vec<f64>>> = z
                    .iter()
                    .map(|p| p.iter().map(|q| bin4(q, t)).collect())
                    .collect();
                let mut s = Vec::new();
                for c in 0..nc {
                    let all: Vec<f64> = zb.iter().flat_map(|p| p[c].iter().copied()).collect();
                    let (m, var) = mean_var(&all);
                    let n = all.len() as f64;
                    let skew = all.iter().map(|x| (x - m).powi(3)).sum::<f64>() / n / var.powf(1.5);
                    let above = all.iter().filter(|&&x| x > 1.0).count() as f64 / n;
                    let (mut gx, mut gy) = (0.0, 0.0);
                    for p in &z {
                        let q = &p[c];
                        for y in 0..t - 1 {
                            for x in 0..t - 1 {
                                let i = y * t + x;
                                gx += (q[i + 1] - q[i]).powi(2);
                                gy += (q[i + t] - q[i]).powi(2);
                            }
                        }
                    }
                    s.extend([skew, above, (gx / gy).ln()]);
                }
                for (a, b) in [(0, 1), (2, 3)] {
                    let (xs, ys): (Vec<f64>, Vec<f64>) = zb
                        .iter()
                        .flat_map(|p| p[a].iter().copied().zip(p[b].iter().copied()))
                        .unzip();
                    let ((mx, vx), (my, vy)) = (mean_var(&xs), mean_var(&ys));
                    let cov = xs
                        .iter()
                        .zip(&ys)
                        .map(|(x, y)| (x - mx) * (y - my))
                        .sum::<f64>()
                        / xs.len() as f64;
                    s.push(cov / (vx * vy).sqrt());
                }
                // Per cell, per channel: pixels above z = 1 within 10 px of the centroid.
                let cents: Vec<&Vec<(f32, f32)>> =
                    well.iter().skip(h).step_by(2).map(|p| &p.1).collect();
                for c in 0..nc {
                    let (mut area, mut n) = (0.0, 0.0);
                    for (p, cs) in z.iter().zip(&cents) {
                        for &(cy, cx) in cs.iter() {
                            let (cy, cx) = (cy.round() as i64, cx.round() as i64);
                            if cy < 10 || cx < 10 || cy + 10 >= t as i64 || cx + 10 >= t as i64 {
                                continue;
                            }
                            for y in cy - 10..=cy + 10 {
                                for x in cx - 10..=cx + 10 {
                                    if p[c][y as usize * t + x as usize] > 1.0 {
                                        area += 1.0;
                                    }
                                }
                            }
                            n += 1.0;
                        }
                    }
                    s.push(area / n);
                }
                s
            };
            [half(0), half(1)]
        })
        .collect()
}

/// Per statistic: mean |difference| between wells (even halves) / mean |difference| between the two
/// halves of a well.
fn between_over_within(st: &[[Vec<f64>; 2]]) -> Vec<f64> {
    let ns = st[0][0].len();
    (0..ns)
        .map(|s| {
            let mut between = (0.0, 0.0);
            for a in 0..st.len() {
                for b in a + 1..st.len() {
                    between.0 += (st[a][0][s] - st[b][0][s]).abs();
                    between.1 += 1.0;
                }
            }
            let within =
                st.iter().map(|w| (w[0][s] - w[1][s]).abs()).sum::<f64>() / st.len() as f64;
            between.0 / between.1 / within.max(1e-12)
        })
        .collect()
}

/// Geometric mean.
fn gmean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

#[test]
fn confounders_survive_per_well_affine_normalisation() {
    // The same seed at both strengths: gain, offset, noise, illumination and blur_sigma are the same draws,
    // so any change comes from the new confounders.
    let ratios = |k: f32| {
        let cfg = ntc_cfg(11, k);
        between_over_within(&half_stats(&render_wells(&cfg), cfg.tile))
    };
    let (r0, r1) = (ratios(0.0), ratios(1.0));
    let (g0, g1) = (gmean(&r0), gmean(&r1));
    assert!(
        g1 > 3.0 && g1 > 2.0 * g0,
        "wells of one plate differ (between / within halves, geometric mean over statistics) by {g1:.2} \
         at confound 1, {g0:.2} at 0: {r1:.1?} vs {r0:.1?}"
    );
    // Gradient anisotropy: only the anisotropic point spread makes it differ between wells.
    let aniso = |r: &[f64]| -> Vec<f64> { [2, 5, 8, 11].iter().map(|&i| r[i]).collect() };
    let (a0, a1) = (aniso(&r0), aniso(&r1));
    assert!(
        a0.iter().all(|&x| x < 2.5) && gmean(&a1) > 2.0 * gmean(&a0) && gmean(&a1) > 2.5,
        "anisotropy between / within: {a0:.2?} at confound 0, {a1:.2?} at 1"
    );
}

#[test]
fn recall_ceiling_of_presets() {
    let demo = SynthConfig::preset("demo", 0).unwrap();
    assert_eq!(demo.n_genes(), 80);
    assert_eq!(demo.recall_ceiling(0.05), 1.0);
    assert_eq!(demo.recall_ceiling(0.10), 1.0);
    // The previous demo: 6 complexes × 4 + 6 null genes: 435 pairs, 36 related.
    let old = SynthConfig {
        complexes: 6,
        null_genes: 6,
        ..demo.clone()
    };
    assert!((old.recall_ceiling(0.05) - 0.05 * 435.0 / 36.0).abs() < 1e-12);
    assert_eq!(old.recall_ceiling(0.10), 1.0);
    let none = SynthConfig {
        complexes: 0,
        ..demo
    };
    assert!(none.recall_ceiling(0.05).is_nan());
    for name in ["small", "large"] {
        let c = SynthConfig::preset(name, 0).unwrap();
        assert_eq!(c.confound, 1.0, "{name} has the default strength");
        assert_eq!(c.recall_ceiling(0.05), 1.0, "{name}");
    }
}

#[test]
fn effects_are_mostly_morphological() {
    let cfg = SynthConfig {
        complexes: 4000,
        null_genes: 0,
        ..SynthConfig::preset("demo", 3).unwrap()
    };
    let g = genes(&cfg);
    let mut used = [0usize; 8];
    let mut sum_abs = [0f32; 8];
    for cx in 0..cfg.complexes {
        let e = &g[cx * cfg.genes_per_complex].effect;
        assert_eq!(
            e.iter().filter(|&&x| x != 0.0).count(),
            3,
            "3 dimensions a complex"
        );
        for (d, &x) in e.iter().enumerate() {
            if x != 0.0 {
                used[d] += 1;
                sum_abs[d] += x.abs();
            }
        }
    }
    let frac = |d: usize| used[d] as f64 / cfg.complexes as f64;
    for (d, name) in PHENO.iter().enumerate() {
        if INTENSITY_DIMS.contains(&d) {
            assert!(frac(d) < 0.1, "{name} in {:.2} of complexes", frac(d));
        } else {
            assert!(frac(d) > 0.4, "{name} in {:.2} of complexes", frac(d));
        }
    }
    // When drawn, an intensity component is smaller than a morphological one on average.
    let mean = |d: usize| sum_abs[d] / used[d].max(1) as f32;
    assert!(
        mean(2) < 0.8 * mean(0) && mean(7) < 0.8 * mean(0),
        "{used:?} {sum_abs:?}"
    );
}

#[test]
fn aniso_blur_has_the_requested_covariance() {
    let t = 65;
    let moments = |img: &[f32]| {
        let (mut m0, mut mx, mut my) = (0f64, 0f64, 0f64);
        for (q, &v) in img.iter().enumerate() {
            let (y, x) = ((q / t) as f64, (q % t) as f64);
            m0 += f64::from(v);
            mx += f64::from(v) * x;
            my += f64::from(v) * y;
        }
        let (cx, cy) = (mx / m0, my / m0);
        let (mut sxx, mut syy, mut sxy) = (0f64, 0f64, 0f64);
        for (q, &v) in img.iter().enumerate() {
            let (y, x) = ((q / t) as f64 - cy, (q % t) as f64 - cx);
            sxx += f64::from(v) * x * x;
            syy += f64::from(v) * y * y;
            sxy += f64::from(v) * x * y;
        }
        (m0, sxx / m0, syy / m0, sxy / m0)
    };
    for (sxx, syy, sxy) in [(4.0f32, 1.5f32, 1.2f32), (1.0, 3.0, -1.0), (2.0, 2.0, 0.0)] {
        let mut img = vec![0f32; t * t];
        img[32 * t + 32] = 1.0;
        aniso_blur(&mut img, t, sxx, syy, sxy);
        let (m0, vx, vy, cxy) = moments(&img);
        assert!((m0 - 1.0).abs() < 1e-4, "mass {m0}");
        // Linear interpolation along the sheared pass adds at most 0.25 px² along x.
        assert!(
            vx >= f64::from(sxx) - 0.05 && vx < f64::from(sxx) + 0.3,
            "sxx {vx} for {sxx}"
        );
        assert!((vy - f64::from(syy)).abs() < 0.05, "syy {vy} for {syy}");
        assert!((cxy - f64::from(sxy)).abs() < 0.1, "sxy {cxy} for {sxy}");
    }
    // Isotropic: the same as the separable blur.
    let mut a: Vec<f32> = (0..t * t)
        .map(|q| ((q * 7919) % 101) as f32 / 100.0)
        .collect();
    let mut b = a.clone();
    aniso_blur(&mut a, t, 1.44, 1.44, 0.0);
    gaussian_blur(&mut b, t, 1.2);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-5,
        "isotropic aniso_blur differs from gaussian_blur by {diff}"
    );
}

#[test]
fn staining_keeps_one_and_bends_the_rest() {
    let v = vec![0.0f32, 0.25, 1.0, 3.0];
    let mut id = v.clone();
    confound::stain(&mut id, 1.0, 0.0);
    assert_eq!(id, v);
    let mut g = v.clone();
    confound::stain(&mut g, 1.4, 0.0);
    assert!((g[2] - 1.0).abs() < 1e-6 && g[1] < 0.25 && g[3] > 3.0);
    let mut s = v.clone();
    confound::stain(&mut s, 1.0, 0.8);
    assert!((s[2] - 1.0).abs() < 1e-6 && s[1] > 0.25 && s[3] < 3.0 && s[3] > s[2]);
}

#[test]
fn density_changes_cells_per_tile() {
    let cfg = SynthConfig::preset("demo", 0).unwrap();
    assert!(slots(&cfg, 0.61) < slots(&cfg, 1.0) && slots(&cfg, 1.0) < slots(&cfg, 1.65));
    let neutral = wells(&SynthConfig {
        confound: 0.0,
        ..cfg.clone()
    });
    assert!(neutral.iter().all(|w| w.confound.density == 1.0));
    let crowded: Vec<f32> = wells(&cfg).iter().map(|w| w.confound.density).collect();
    assert!(
        crowded.iter().any(|&d| d > 1.05) || crowded.iter().any(|&d| d < 0.95),
        "{crowded:?}"
    );
}
