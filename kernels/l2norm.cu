// l2norm.cu: row L2 normalisation in the DINO head, F.normalize(x, dim=-1, eps) = x / max(‖x‖₂, eps).
// Reference: torch.nn.functional.normalize.
//
// l2norm_forward_f32(out, norm, inp, R, C, eps)
//   out, inp: (R, C); norm: (R) the unclamped norms   launch: one warp per row, block 256
// l2norm_backward_f32(dinp, dout, out, norm, R, C, eps)
//   dinp (=): (dy − y·(y·dy))/‖x‖ when ‖x‖ > eps, else dy/eps   launch: one warp per row, block 256
//
// CPU twin: src/backend/cpu/l2norm.rs   Tests: tests/parity/l2norm.rs, tests/gradcheck/l2norm.rs

extern "C" __global__ void l2norm_forward_f32(float* out, float* norm, const float* inp, int R, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= R) return;  // guard (whole warp)
  const float* x = inp + (long long)row * C;
  float s = 0.f;
  for (int j = lane; j < C; j += 32) s += x[j] * x[j];
  const float nv = sqrtf(warp_reduce_sum(s));
  const float den = fmaxf(nv, eps);
  float* o = out + (long long)row * C;
  for (int j = lane; j < C; j += 32) o[j] = x[j] / den;
  if (lane == 0) norm[row] = nv;
}

extern "C" __global__ void l2norm_backward_f32(float* dinp, const float* dout, const float* out, const float* norm,
                                               int R, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= R) return;  // guard (whole warp)
  const float* y = out + (long long)row * C;
  const float* dy = dout + (long long)row * C;
  float* d = dinp + (long long)row * C;
  const float nv = norm[row];
  float s = 0.f;
  for (int j = lane; j < C; j += 32) s += y[j] * dy[j];
  const float dot = warp_reduce_sum(s);
  for (int j = lane; j < C; j += 32) d[j] = nv > eps ? (dy[j] - y[j] * dot) / nv : dy[j] / eps;
}
