// layernorm.cu: LayerNorm over the channel dim, biased variance (pre-norm ViT blocks, final norm).
// Reference: torch.nn.LayerNorm, eps = 1e-6 (DINO ViT).
//
// layernorm_forward_f32(out, mean, rstd, inp, weight, bias, R, C, eps)
//   inp, out: (R, C) row-major   weight, bias: (C)   mean, rstd: (R)
//   launch: one warp per row, block 256 → grid CEIL_DIV(R, 8)
// layernorm_backward_f32(dinp, dout, inp, weight, mean, rstd, R, C)
//   dinp: (R, C) (+=, residual stream)   launch: one warp per row, block 256
// layernorm_backward_params_f32(dweight, dbias, dout, inp, mean, rstd, R, C)
//   dweight, dbias: (C) (+=), rows summed in order   launch: one thread per column, block 256
//
// CPU twin: src/backend/cpu/layernorm.rs   Tests: tests/parity/layernorm.rs, tests/gradcheck/layernorm.rs

extern "C" __global__ void layernorm_forward_f32(float* out, float* mean, float* rstd, const float* inp,
                                                 const float* weight, const float* bias, int R, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= R) return;  // guard (whole warp)
  const float* x = inp + (long long)row * C;
  float s = 0.f;
  for (int j = lane; j < C; j += 32) s += x[j];
  const float mu = warp_reduce_sum(s) / C;
  float v = 0.f;
  for (int j = lane; j < C; j += 32) {
    const float d = x[j] - mu;
    v += d * d;
  }
  const float rs = 1.f / sqrtf(warp_reduce_sum(v) / C + eps);
  float* o = out + (long long)row * C;
  for (int j = lane; j < C; j += 32) o[j] = (x[j] - mu) * rs * weight[j] + bias[j];
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

extern "C" __global__ void layernorm_backward_f32(float* dinp, const float* dout, const float* inp,
                                                  const float* weight, const float* mean, const float* rstd, int R,
                                                  int C) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= R) return;  // guard (whole warp)
  const float* x = inp + (long long)row * C;
  const float* dy = dout + (long long)row * C;
  const float mu = mean[row], rs = rstd[row];
  float sdn = 0.f, sdnx = 0.f;
  for (int j = lane; j < C; j += 32) {
    const float dn = dy[j] * weight[j];
    sdn += dn;
    sdnx += dn * (x[j] - mu) * rs;
  }
  const float mdn = warp_reduce_sum(sdn) / C;
  const float mdnx = warp_reduce_sum(sdnx) / C;
  float* dx = dinp + (long long)row * C;
  for (int j = lane; j < C; j += 32) {
    const float xhat = (x[j] - mu) * rs;
    dx[j] += (dy[j] * weight[j] - mdn - xhat * mdnx) * rs;
  }
}

extern "C" __global__ void layernorm_backward_params_f32(float* dweight, float* dbias, const float* dout,
                                                         const float* inp, const float* mean, const float* rstd,
                                                         int R, int C) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= C) return;  // guard
  float gw = 0.f, gb = 0.f;
  for (int r = 0; r < R; ++r) {
    const float dy = dout[(long long)r * C + j];
    gw += dy * (inp[(long long)r * C + j] - mean[r]) * rstd[r];
    gb += dy;
  }
  dweight[j] += gw;
  dbias[j] += gb;
}
