// gelu.cu: exact-erf GELU (torch nn.GELU(), approximate='none'), x·Φ(x) = x·½(1 + erf(x/√2)).
// Reference: torch.nn.functional.gelu.
//
// gelu_forward_f32(out, inp, n)
//   out, inp: (n)   launch: one thread per element, block 256 → grid CEIL_DIV(n, 256)
// gelu_backward_f32(dinp, dout, inp, n)
//   dinp (=) = dout·(Φ(x) + x·φ(x)); dinp, dout, inp: (n)   launch: as forward
//
// CPU twin: src/backend/cpu/gelu.rs   Tests: tests/parity/gelu.rs, tests/gradcheck/gelu.rs

extern "C" __global__ void gelu_forward_f32(float* out, const float* inp, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  const float x = inp[i];
  out[i] = x * 0.5f * (1.f + erff(x * SQRT1_2_F));
}

extern "C" __global__ void gelu_backward_f32(float* dinp, const float* dout, const float* inp, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  const float x = inp[i];
  const float cdf = 0.5f * (1.f + erff(x * SQRT1_2_F));
  const float pdf = INV_SQRT_2PI_F * expf(-0.5f * x * x);
  dinp[i] = dout[i] * (cdf + x * pdf);
}
