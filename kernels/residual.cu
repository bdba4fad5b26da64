// residual.cu: residual add with the per-sample stochastic-depth scale (timm DropPath: x/keep·mask), and
// CLS-row gather/scatter and column placement for the backbone outputs and the 4×C embedding.
// Reference: DINO vision_transformer.py Block.forward, drop_path, get_intermediate_layers.
//
// residual_forward_f32(out, inp, branch, scale, B, M)
//   out[b] = inp[b] + scale[b]·branch[b]; out, inp, branch: (B, M); scale: (B)   launch: one thread per element
// residual_backward_f32(dbranch, dout, scale, B, M)
//   dbranch (=) = scale[b]·dout[b]   launch: one thread per element
// residual_cls_gather_f32(out, x, B, N, C)
//   out: (B, C) = x[:, 0, :]; x: (B, N, C)   launch: one thread per element of out
// residual_cls_scatter_f32(dx, dout, B, N, C)
//   dx (=): dout on the CLS rows dx[:, 0, :], 0 on every other row; dx: (B, N, C)   launch: one thread per
//   element of dx. The residual-stream gradient's first writer, so it needs no memset before.
// residual_copy_cols_f32(out, inp, R, C, TC, col_off)
//   out[:, col_off .. col_off+C] = inp; out: (R, TC); inp: (R, C)   launch: one thread per element of inp
//
// CPU twin: src/backend/cpu/residual.rs   Tests: tests/parity/residual.rs, tests/gradcheck/residual.rs

extern "C" __global__ void residual_forward_f32(float* out, const float* inp, const float* branch, const float* scale,
                                                int B, int M) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)B * M) return;  // guard
  out[i] = inp[i] + scale[i / M] * branch[i];
}

extern "C" __global__ void residual_backward_f32(float* dbranch, const float* dout, const float* scale, int B, int M) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)B * M) return;  // guard
  dbranch[i] = scale[i / M] * dout[i];
}

extern "C" __global__ void residual_cls_gather_f32(float* out, const float* x, int B, int N, int C) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * C) return;  // guard
  out[i] = x[(long long)(i / C) * N * C + i % C];
}

extern "C" __global__ void residual_cls_scatter_f32(float* dx, const float* dout, int B, int N, int C) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)B * N * C) return;  // guard
  const long long row = i / C;  // b·N + t
  dx[i] = (row % N == 0) ? dout[(row / N) * C + i % C] : 0.0f;
}

extern "C" __global__ void residual_copy_cols_f32(float* out, const float* inp, int R, int C, int TC, int col_off) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)R * C) return;  // guard
  out[(i / C) * TC + col_off + i % C] = inp[i];
}
