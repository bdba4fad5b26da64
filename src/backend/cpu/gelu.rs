//! CPU twin of `kernels/gelu.cu`: exact GELU, x·Φ(x) = x·½(1 + erf(x/√2)) (torch `nn.GELU()`).
use super::Real;
use rayon::prelude::*;

const SQRT1_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// out = GELU(inp), elementwise.
pub fn gelu_forward<T: Real>(out: &mut [T], inp: &[T]) {
    let half = T::c(0.5);
    let s = T::c(SQRT1_2);
    out.par_iter_mut()
        .zip(inp.par_iter())
        .for_each(|(o, &x)| *o = x * half * (T::one() + (x * s).erf()));
}

/// dinp (=) = dout·(Φ(x) + x·φ(x)).
pub fn gelu_backward<T: Real>(dinp: &mut [T], dout: &[T], inp: &[T]) {
    let half = T::c(0.5);
    let s = T::c(SQRT1_2);
    let k = T::c(INV_SQRT_2PI);
    dinp.par_iter_mut()
        .zip(dout.par_iter().zip(inp.par_iter()))
        .for_each(|(d, (&dy, &x))| {
            let cdf = half * (T::one() + (x * s).erf());
            let pdf = k * (-half * x * x).exp();
            *d = dy * (cdf + x * pdf);
        });
}
