// set_mean.cu: Set-DINO's aggregation: the mean over the n consecutive rows of each set (rows are
// set-major, s·n … s·n+n−1), per (set, crop), before the projection head (algorithm.md §6.3).
// Reference: Set-DINO DINOHead.forward, x.reshape(-1, n, C).mean(1).
//
// set_mean_forward_f32(out, inp, S, n, C)
//   out: (S, C); inp: (S·n, C)   launch: one thread per element of out, block 256
// set_mean_backward_f32(dinp, dout, S, n, C)
//   dinp (=): (S·n, C) = dout[s]/n   launch: one thread per element of dinp, block 256
//
// CPU twin: src/backend/cpu/set_mean.rs   Tests: tests/parity/set_mean.rs, tests/gradcheck/set_mean.rs

extern "C" __global__ void set_mean_forward_f32(float* out, const float* inp, int S, int n, int C) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= S * C) return;  // guard
  const int s = i / C, c = i % C;
  float acc = 0.f;
  for (int r = 0; r < n; ++r) acc += inp[((long long)s * n + r) * C + c];
  out[i] = acc * (1.f / (float)n);
}

extern "C" __global__ void set_mean_backward_f32(float* dinp, const float* dout, int S, int n, int C) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)S * n * C) return;  // guard
  const long long row = i / C;
  dinp[i] = dout[(row / n) * C + i % C] * (1.f / (float)n);
}
