// matmul.cu: the Linear layer out = inp·Wᵀ + b (torch addmm) and its backward, as 16×16 shared-memory
// tiled SGEMMs (f32; the bf16 tensor-core version will replace the tile loop, not the interface).
// Reference: torch.nn.functional.linear.
//
// matmul_forward_f32(out, inp, weight, bias, R, I, O, has_bias)
//   out: (R, O); inp: (R, I); weight: (O, I); bias: (O) or null when has_bias = 0
//   launch: grid (CEIL_DIV(O,16), CEIL_DIV(R,16)), block (16,16)
// matmul_backward_input_f32(dinp, dout, weight, R, I, O)
//   dinp (=): (R, I) = dout (R, O)·weight (O, I)   launch: grid (CEIL_DIV(I,16), CEIL_DIV(R,16)), block (16,16)
// matmul_backward_weight_f32(dweight, dout, inp, R, I, O)
//   dweight (+=): (O, I) += doutᵀ·inp               launch: grid (CEIL_DIV(I,16), CEIL_DIV(O,16)), block (16,16)
// matmul_backward_bias_f32(dbias, dout, R, O)
//   dbias (+=): (O) column sums, rows in order       launch: one thread per column, block 256
//
// CPU twin: src/backend/cpu/matmul.rs   Tests: tests/parity/matmul.rs, tests/gradcheck/matmul.rs

#define MM_TS 16

extern "C" __global__ void matmul_forward_f32(float* out, const float* inp, const float* weight, const float* bias,
                                              int R, int I, int O, int has_bias) {
  __shared__ float As[MM_TS][MM_TS + 1];  // inp tile: rows r, cols k
  __shared__ float Ws[MM_TS][MM_TS + 1];  // weight tile: rows o, cols k
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int r0 = blockIdx.y * MM_TS, o0 = blockIdx.x * MM_TS;
  float acc = 0.f;
  for (int k0 = 0; k0 < I; k0 += MM_TS) {
    As[ty][tx] = (r0 + ty < R && k0 + tx < I) ? inp[(long long)(r0 + ty) * I + k0 + tx] : 0.f;
    Ws[ty][tx] = (o0 + ty < O && k0 + tx < I) ? weight[(long long)(o0 + ty) * I + k0 + tx] : 0.f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < MM_TS; ++k) acc += As[ty][k] * Ws[tx][k];
    __syncthreads();
  }
  const int r = r0 + ty, o = o0 + tx;
  if (r < R && o < O) out[(long long)r * O + o] = acc + (has_bias ? bias[o] : 0.f);
}

extern "C" __global__ void matmul_backward_input_f32(float* dinp, const float* dout, const float* weight, int R, int I,
                                                     int O) {
  __shared__ float Ds[MM_TS][MM_TS + 1];  // dout tile: rows r, cols o
  __shared__ float Ws[MM_TS][MM_TS + 1];  // weight tile: rows o, cols i
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int r0 = blockIdx.y * MM_TS, i0 = blockIdx.x * MM_TS;
  float acc = 0.f;
  for (int k0 = 0; k0 < O; k0 += MM_TS) {
    Ds[ty][tx] = (r0 + ty < R && k0 + tx < O) ? dout[(long long)(r0 + ty) * O + k0 + tx] : 0.f;
    Ws[ty][tx] = (k0 + ty < O && i0 + tx < I) ? weight[(long long)(k0 + ty) * I + i0 + tx] : 0.f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < MM_TS; ++k) acc += Ds[ty][k] * Ws[k][tx];
    __syncthreads();
  }
  const int r = r0 + ty, i = i0 + tx;
  if (r < R && i < I) dinp[(long long)r * I + i] = acc;
}

extern "C" __global__ void matmul_backward_weight_f32(float* dweight, const float* dout, const float* inp, int R, int I,
                                                      int O) {
  __shared__ float Ds[MM_TS][MM_TS + 1];  // dout tile: rows r, cols o
  __shared__ float Xs[MM_TS][MM_TS + 1];  // inp tile: rows r, cols i
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int o0 = blockIdx.y * MM_TS, i0 = blockIdx.x * MM_TS;
  float acc = 0.f;
  for (int k0 = 0; k0 < R; k0 += MM_TS) {
    Ds[ty][tx] = (k0 + ty < R && o0 + tx < O) ? dout[(long long)(k0 + ty) * O + o0 + tx] : 0.f;
    Xs[ty][tx] = (k0 + ty < R && i0 + tx < I) ? inp[(long long)(k0 + ty) * I + i0 + tx] : 0.f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < MM_TS; ++k) acc += Ds[k][ty] * Xs[k][tx];
    __syncthreads();
  }
  const int o = o0 + ty, i = i0 + tx;
  if (o < O && i < I) dweight[(long long)o * I + i] += acc;
}

extern "C" __global__ void matmul_backward_bias_f32(float* dbias, const float* dout, int R, int O) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= O) return;  // guard
  float acc = 0.f;
  for (int r = 0; r < R; ++r) acc += dout[(long long)r * O + o];
  dbias[o] += acc;
}
