//! Schedules, exactly DINO's `utils.cosine_scheduler` (numpy semantics: linear warm-up by `linspace`
//! including both ends, then a cosine over the remaining iterations that never quite reaches `final`), and
//! the per-epoch teacher temperature (algorithm.md §3, §4.6).

/// Value at iteration `it` of `cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs,
/// start_warmup_value)`; iterations past the end hold the last value.
pub fn cosine_schedule(
    base: f64,
    final_value: f64,
    epochs: usize,
    niter_per_ep: usize,
    warmup_epochs: usize,
    start_warmup_value: f64,
    it: usize,
) -> f64 {
    cosine_iters(
        base,
        final_value,
        epochs * niter_per_ep,
        warmup_epochs * niter_per_ep,
        start_warmup_value,
        it,
    )
}

/// [`cosine_schedule`] with the totals in iterations: `total` iterations of which the first `warm`
/// (at most `total`) are the linear warm-up.
pub fn cosine_iters(
    base: f64,
    final_value: f64,
    total: usize,
    warm: usize,
    start_warmup_value: f64,
    it: usize,
) -> f64 {
    let warm = warm.min(total);
    let it = it.min(total.saturating_sub(1));
    if it < warm {
        // np.linspace(start, base, warm): step (base − start)/(warm − 1), last element exactly base.
        if warm == 1 {
            return start_warmup_value;
        }
        if it == warm - 1 {
            return base;
        }
        let step = (base - start_warmup_value) / (warm - 1) as f64;
        return it as f64 * step + start_warmup_value;
    }
    let n = total - warm;
    let i = (it - warm) as f64;
    final_value + 0.5 * (base - final_value) * (1.0 + (std::f64::consts::PI * i / n as f64).cos())
}

/// Teacher temperature at `epoch`: `concat(linspace(warmup, temp, warmup_epochs), ones(...)·temp)`.
pub fn teacher_temp(warmup: f64, temp: f64, warmup_epochs: usize, epoch: usize) -> f64 {
    if epoch < warmup_epochs {
        if warmup_epochs == 1 {
            return warmup;
        }
        if epoch == warmup_epochs - 1 {
            return temp;
        }
        warmup + epoch as f64 * (temp - warmup) / (warmup_epochs - 1) as f64
    } else {
        temp
    }
}

/// Everything the step needs from the schedules at one iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepSchedule {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub teacher_temp: f64,
    /// True while the student's last layer is frozen (epoch < freeze_last_layer).
    pub freeze_last_layer: bool,
}

/// The schedule values at global iteration `it` (= epoch·steps_per_epoch + batch index).
pub fn at(
    optim: &crate::config::OptimConfig,
    steps: &crate::config::StepConfig,
    it: usize,
) -> StepSchedule {
    let spe = steps.steps_per_epoch;
    let epoch = it / spe;
    let lr_peak = optim.lr * steps.sets_per_step as f64 / 256.0;
    // Step-defined warm-up and freeze replace the epoch-defined ones when set.
    let warm = optim.warmup_steps.map_or(optim.warmup_epochs * spe, |s| {
        usize::try_from(s).unwrap_or(usize::MAX)
    });
    let frozen = optim
        .freeze_last_layer_steps
        .map_or(epoch < optim.freeze_last_layer, |s| (it as u64) < s);
    StepSchedule {
        lr: cosine_iters(lr_peak, optim.min_lr, steps.epochs * spe, warm, 0.0, it),
        weight_decay: cosine_schedule(
            optim.weight_decay,
            optim.weight_decay_end,
            steps.epochs,
            spe,
            0,
            0.0,
            it,
        ),
        momentum: cosine_schedule(optim.momentum_teacher, 1.0, steps.epochs, spe, 0, 0.0, it),
        teacher_temp: teacher_temp(
            optim.warmup_teacher_temp,
            optim.teacher_temp,
            optim.warmup_teacher_temp_epochs,
            epoch,
        ),
        freeze_last_layer: frozen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy: np.linspace(0, 1, 5) = [0, .25, .5, .75, 1]; then cosine over 5 iters from 1 to 0.
    #[test]
    fn cosine_matches_numpy_semantics() {
        let v: Vec<f64> = (0..10)
            .map(|i| cosine_schedule(1.0, 0.0, 2, 5, 1, 0.0, i))
            .collect();
        let expect_warm = [0.0, 0.25, 0.5, 0.75, 1.0];
        for (a, b) in v[..5].iter().zip(expect_warm) {
            assert!((a - b).abs() < 1e-15);
        }
        for (i, &x) in v[5..].iter().enumerate() {
            let want = 0.5 * (1.0 + (std::f64::consts::PI * i as f64 / 5.0).cos());
            assert!((x - want).abs() < 1e-15);
        }
        assert!(v[9] > 0.0, "never reaches the final value");
    }

    /// Step-defined warm-up and freeze replace the epoch-defined ones; unset, the epochs rule.
    #[test]
    fn step_defined_warmup_and_freeze() {
        let steps = crate::config::StepConfig {
            sets_per_step: 256,
            epochs: 10,
            steps_per_epoch: 100,
            ..Default::default()
        };
        let mut o = crate::config::OptimConfig {
            lr: 1.0,
            min_lr: 0.0,
            warmup_epochs: 1,
            freeze_last_layer: 1,
            ..Default::default()
        };
        // Epochs: warm-up over 100 iterations (lr 1 at it 99), frozen for the first 100.
        assert!((at(&o, &steps, 49).lr - 49.0 / 99.0).abs() < 1e-12);
        assert!(at(&o, &steps, 99).freeze_last_layer && !at(&o, &steps, 100).freeze_last_layer);
        o.warmup_steps = Some(11);
        o.freeze_last_layer_steps = Some(5);
        assert!((at(&o, &steps, 5).lr - 0.5).abs() < 1e-12);
        assert_eq!(at(&o, &steps, 10).lr, 1.0);
        // The cosine starts at the peak right after the warm-up, then decays.
        assert_eq!(at(&o, &steps, 11).lr, 1.0);
        assert!(at(&o, &steps, 12).lr < 1.0 && at(&o, &steps, 12).lr > 0.99);
        assert!(at(&o, &steps, 4).freeze_last_layer && !at(&o, &steps, 5).freeze_last_layer);
        o.freeze_last_layer_steps = Some(0);
        assert!(!at(&o, &steps, 0).freeze_last_layer);
    }

    #[test]
    fn teacher_temp_warmup() {
        assert_eq!(teacher_temp(0.04, 0.07, 4, 0), 0.04);
        assert!((teacher_temp(0.04, 0.07, 4, 1) - 0.05).abs() < 1e-15);
        assert_eq!(teacher_temp(0.04, 0.07, 4, 3), 0.07);
        assert_eq!(teacher_temp(0.04, 0.07, 4, 10), 0.07);
    }
}
