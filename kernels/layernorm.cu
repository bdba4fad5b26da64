// layernorm.cu: LayerNorm over the channel dim, biased variance (pre-norm ViT blocks, final norm).
// Reference: torch.nn.LayerNorm, eps = 1e-6 (DINO ViT).
//
// layernorm_forward_f32(out, mean, rstd, inp, weight, bias, R, C, eps)
//   inp, out: (R, C) row-major   weight, bias: (C)   mean, rstd: (R)
//   launch: one warp per row, block 256 → grid CEIL_DIV(R, 8)
// layernorm_forward_bf16(out, mean, rstd, inp, weight, bias, R, C, eps)
//   as layernorm_forward_f32 with out (R, C) stored in bf16 (a GEMM operand)   launch: as above
// layernorm_forward_residual_f32(x, out, mean, rstd, inp, branch, scale, weight, bias, R, C, N, eps)
//   the residual add fused in: x (=) = inp + scale[row / N]·branch (the residual stream, f32), then
//   out, mean, rstd = LayerNorm(x); x, inp, branch, out: (R, C); scale: (R / N)   launch: one warp per row
// layernorm_forward_residual_bf16(x, out, mean, rstd, inp, branch, scale, weight, bias, R, C, N, eps)
//   as layernorm_forward_residual_f32 with out stored in bf16   launch: one warp per row
// layernorm_backward_f32(dinp, dout, inp, weight, mean, rstd, R, C)
//   dinp: (R, C) (+=, residual stream)   launch: one warp per row, block 256
// layernorm_backward_params_partial_f32(partial, dout, inp, mean, rstd, R, C)
//   partial (=): (NB, 2, C), NB = CEIL_DIV(R, 256): per 256-row block, Σ dy·x̂ (row 0) and Σ dy (row 1),
//   rows in a fixed order   launch: grid (CEIL_DIV(C,32), NB), block (32,8)
// layernorm_backward_params_final_f32(dweight, dbias, partial, NB, C)
//   dweight, dbias: (C) (+=) Σ over the NB blocks in order (bit-deterministic run to run)
//   launch: one thread per column, block 256
//
// CPU twin: src/backend/cpu/layernorm.rs   Tests: tests/parity/layernorm.rs, tests/gradcheck/layernorm.rs

DEV void ln_store(float* p, float v) { *p = v; }
DEV void ln_store(bf16_t* p, float v) { *p = f32_to_bf16_rn(v); }

// One warp per row. With branch non-null the row is first x = inp + scale[row / n]·branch, written to
// xout (each lane writes and then re-reads only its own columns); then LayerNorm(x) into out.
template <typename OutT>
DEV void ln_forward_row(OutT* out, float* mean, float* rstd, float* xout, const float* inp, const float* branch,
                        const float* scale, int n, const float* weight, const float* bias, int R, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= R) return;  // guard (whole warp)
  const float* x = inp + (long long)row * C;
  if (branch) {
    const float s = scale[row / n];
    const float* y = branch + (long long)row * C;
    float* xo = xout + (long long)row * C;
    for (int j = lane; j < C; j += 32) xo[j] = x[j] + s * y[j];
    x = xo;
  }
  float sum = 0.f;
  for (int j = lane; j < C; j += 32) sum += x[j];
  const float mu = warp_reduce_sum(sum) / C;
  float v = 0.f;
  for (int j = lane; j < C; j += 32) {
    const float d = x[j] - mu;
    v += d * d;
  }
  const float rs = 1.f / sqrtf(warp_reduce_sum(v) / C + eps);
  OutT* o = out + (long long)row * C;
  for (int j = lane; j < C; j += 32) ln_store(o + j, (x[j] - mu) * rs * weight[j] + bias[j]);
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

extern "C" __global__ void layernorm_forward_f32(float* out, float* mean, float* rstd, const float* inp,
                                                 const float* weight, const float* bias, int R, int C, float eps) {
  ln_forward_row(out, mean, rstd, nullptr, inp, nullptr, nullptr, 1, weight, bias, R, C, eps);
}

extern "C" __global__ void layernorm_forward_bf16(bf16_t* out, float* mean, float* rstd, const float* inp,
                                                  const float* weight, const float* bias, int R, int C, float eps) {
  ln_forward_row(out, mean, rstd, nullptr, inp, nullptr, nullptr, 1, weight, bias, R, C, eps);
}

extern "C" __global__ void layernorm_forward_residual_f32(float* x, float* out, float* mean, float* rstd,
                                                          const float* inp, const float* branch, const float* scale,
                                                          const float* weight, const float* bias, int R, int C, int N,
                                                          float eps) {
  ln_forward_row(out, mean, rstd, x, inp, branch, scale, N, weight, bias, R, C, eps);
}

extern "C" __global__ void layernorm_forward_residual_bf16(float* x, bf16_t* out, float* mean, float* rstd,
                                                           const float* inp, const float* branch, const float* scale,
                                                           const float* weight, const float* bias, int R, int C, int N,
                                                           float eps) {
  ln_forward_row(out, mean, rstd, x, inp, branch, scale, N, weight, bias, R, C, eps);
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

// Two-level parameter gradients: block (32, 8) owns 32 columns of a 256-row block; thread (x, y) adds
// rows y, y+8, … in order, the 8 partial sums are added in y order; a final pass adds the blocks in
// order. No thread loops over all rows.
#define LN_PARAM_ROWS 256
extern "C" __global__ void layernorm_backward_params_partial_f32(float* partial, const float* dout, const float* inp,
                                                                 const float* mean, const float* rstd, int R, int C) {
  __shared__ float sw[8][33], sb[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int j = blockIdx.x * 32 + tx, r0 = blockIdx.y * LN_PARAM_ROWS;
  float gw = 0.f, gb = 0.f;
  if (j < C)
    for (int r = r0 + ty; r < min(R, r0 + LN_PARAM_ROWS); r += 8) {
      const float dy = dout[(long long)r * C + j];
      gw += dy * (inp[(long long)r * C + j] - mean[r]) * rstd[r];
      gb += dy;
    }
  sw[ty][tx] = gw;
  sb[ty][tx] = gb;
  __syncthreads();
  if (ty != 0 || j >= C) return;  // guard
  float tw = 0.f, tb = 0.f;
#pragma unroll
  for (int y = 0; y < 8; ++y) {
    tw += sw[y][tx];
    tb += sb[y][tx];
  }
  partial[((long long)blockIdx.y * 2 + 0) * C + j] = tw;
  partial[((long long)blockIdx.y * 2 + 1) * C + j] = tb;
}

extern "C" __global__ void layernorm_backward_params_final_f32(float* dweight, float* dbias, const float* partial,
                                                               int NB, int C) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= C) return;  // guard
  float gw = 0.f, gb = 0.f;
  for (int b = 0; b < NB; ++b) {
    gw += partial[((long long)b * 2 + 0) * C + j];
    gb += partial[((long long)b * 2 + 1) * C + j];
  }
  dweight[j] += gw;
  dbias[j] += gb;
}
