// reduce.cu: flat-buffer utilities: fill, and per-tensor gradient clipping over a table of tensor ranges
// (DINO utils.clip_gradients: coef = clip/(‖g‖ + 1e-6), applied when < 1, per parameter tensor).
// Reference: DINO utils.py clip_gradients.
//
// reduce_fill_f32(buf, value, n)
//   buf: (n) = value   launch: one thread per element, block 256
// reduce_clip_per_tensor_sumsq_f32(sumsq, grads, table, T)
//   sumsq: (T) = Σ g² over tensor t; table: (2T) int pairs (offset, length) into grads
//   launch: one block of 256 per tensor
// reduce_clip_per_tensor_scale_f32(grads, sumsq, table, T, max_norm)
//   grads (in place): tensor t scaled by max_norm/(√sumsq[t] + 1e-6) when that is < 1
//   launch: one block of 256 per tensor
//
// CPU twin: src/backend/cpu/optim.rs (reduce_clip_per_tensor)   Tests: tests/parity/reduce.rs

extern "C" __global__ void reduce_fill_f32(float* buf, float value, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  buf[i] = value;
}

extern "C" __global__ void reduce_clip_per_tensor_sumsq_f32(float* sumsq, const float* grads, const int* table, int T) {
  __shared__ float scratch[32];
  const int t = blockIdx.x;
  if (t >= T) return;  // guard (whole block)
  const int off = table[2 * t], len = table[2 * t + 1];
  float acc = 0.f;
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    const float g = grads[(long long)off + i];
    acc += g * g;
  }
  acc = block_reduce_sum(acc, scratch);
  if (threadIdx.x == 0) sumsq[t] = acc;
}

extern "C" __global__ void reduce_clip_per_tensor_scale_f32(float* grads, const float* sumsq, const int* table, int T,
                                                 float max_norm) {
  const int t = blockIdx.x;
  if (t >= T) return;  // guard (whole block)
  const float coef = max_norm / (sqrtf(sumsq[t]) + 1e-6f);
  if (coef >= 1.f) return;
  const int off = table[2 * t], len = table[2 * t + 1];
  for (int i = threadIdx.x; i < len; i += blockDim.x) grads[(long long)off + i] *= coef;
}
