// weightnorm.cu: the weight-normalised last layer of the DINO head, W = g·V/‖V‖ with one norm per output
// row (nn.utils.weight_norm, dim 0); g is fixed at 1 in the reference and receives no gradient.
// Reference: torch._weight_norm.
//
// weightnorm_forward_f32(w, norm, v, g, K, C)
//   w, v: (K, C); norm: (K) = ‖v[k]‖; g: (K)   launch: one warp per row, block 256
// weightnorm_backward_f32(dv, dw, v, g, norm, K, C)
//   dv (+=): (K, C) = g/‖v‖·(dw − v̂·(v̂·dw))   launch: one warp per row, block 256
//
// CPU twin: src/backend/cpu/weightnorm.rs   Tests: tests/parity/weightnorm.rs, tests/gradcheck/weightnorm.rs

extern "C" __global__ void weightnorm_forward_f32(float* w, float* norm, const float* v, const float* g, int K, int C) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= K) return;  // guard (whole warp)
  const float* vr = v + (long long)row * C;
  float s = 0.f;
  for (int j = lane; j < C; j += 32) s += vr[j] * vr[j];
  const float nv = sqrtf(warp_reduce_sum(s));
  const float f = g[row] / nv;
  float* wr = w + (long long)row * C;
  for (int j = lane; j < C; j += 32) wr[j] = vr[j] * f;
  if (lane == 0) norm[row] = nv;
}

extern "C" __global__ void weightnorm_backward_f32(float* dv, const float* dw, const float* v, const float* g,
                                                   const float* norm, int K, int C) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= K) return;  // guard (whole warp)
  const float* vr = v + (long long)row * C;
  const float* gw = dw + (long long)row * C;
  const float nv = norm[row];
  float s = 0.f;
  for (int j = lane; j < C; j += 32) s += vr[j] * gw[j];
  const float dot = warp_reduce_sum(s) / nv;
  const float f = g[row] / nv;
  float* d = dv + (long long)row * C;
  for (int j = lane; j < C; j += 32) d[j] += f * (gw[j] - vr[j] / nv * dot);
}
