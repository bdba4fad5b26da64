// adamw.cu: AdamW over a contiguous range of the flat parameter buffer, PyTorch single-tensor semantics:
//   p *= 1 − lr·wd;  m = lerp(m, g, 1 − β1);  v = β2·v + (1 − β2)·g²;  p −= (lr/bc1)·m/(√v/√bc2 + ε).
// The scalars are precomputed on the host in f64 and read from device memory (`h` points at 8 words in the step's
// scalar buffer, refreshed by one upload per step), so a captured step replays with the new step's values.
// Reference: torch.optim.AdamW (_single_tensor_adamw).
//
// adamw_update_f32(params, m, v, grads, n, h)
//   params, m, v (in place), grads: (n), pointers already offset to the range; h: one AdamWHyper (8 words)   launch: one thread per element
// adamw_update_bf16(params, params16, m, v, grads, n, h)
//   as adamw_update_f32, and params16 (=) the bf16 copy of the updated params in the same pass (the
//   weights the bf16 GEMMs read)   launch: one thread per element
//
// CPU twin: src/backend/cpu/optim.rs (adamw_update, adamw_update_bf16)   Tests: tests/parity/adamw.rs

struct AdamWHyper {
  float decay;             // 1 − lr·wd
  float one_minus_beta1;   // 1 − β1
  float beta2;
  float one_minus_beta2;   // 1 − β2
  float step_size;         // lr / (1 − β1^t)
  float bias_correction2_sqrt;
  float eps;
  float pad;
};
static_assert(sizeof(AdamWHyper) == 32, "AdamWHyper must match AdamWHyperC in src/backend/gpu/mod.rs");

DEV float adamw_step(float* params, float* m, float* v, const float* grads, int i, const AdamWHyper& h) {
  const float g = grads[i];
  float p = params[i] * h.decay;
  float mi = m[i];
  mi += h.one_minus_beta1 * (g - mi);
  const float vi = v[i] * h.beta2 + h.one_minus_beta2 * g * g;
  const float denom = sqrtf(vi) / h.bias_correction2_sqrt + h.eps;
  p -= h.step_size * (mi / denom);
  params[i] = p;
  m[i] = mi;
  v[i] = vi;
  return p;
}

extern "C" __global__ void adamw_update_f32(float* params, float* m, float* v, const float* grads, int n,
                                            const AdamWHyper* h) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  adamw_step(params, m, v, grads, i, *h);
}

extern "C" __global__ void adamw_update_bf16(float* params, bf16_t* params16, float* m, float* v, const float* grads,
                                             int n, const AdamWHyper* h) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  params16[i] = f32_to_bf16_rn(adamw_step(params, m, v, grads, i, *h));
}
