// augment.cu: the multi-crop augmentation and normalisation on the device, from raw crops and the
// per-crop parameters the data path draws (src/data/augment.rs: D4 element, crop window, per-channel
// gamma and offset), so CPU and GPU augmentations use the same random parameters.
// Reference: Set-DINO augmentations.py (post-fix), cv2.INTER_NEAREST resize, algorithm.md §5 and §7.3.
//
// augment_render_f32(out, src, params, n, C, crop, size)
//   out: (n, C, size, size); src: (cells, C, crop, crop) raw u16 values held as floats (0 … 65535);
//   params: (n, 8 + 2C) per crop [flip_ud, flip_lr, rot90, r0, rows, c0, cols, cell, gamma[C], offset[C]];
//   out = clamp((src/65535)^gamma + offset, 0, 1) at the nearest-resized window of the D4-transformed crop
//   launch: one thread per output element, block 256
// augment_render_u16_f32(out, src, params, n, C, crop, size)
//   the same from src: (cells, C, crop, crop) u16 values packed two per 32-bit word (Backend::upload_u16),
//   half the bytes of the f32 source   launch: one thread per output element, block 256
// augment_normalize_ntc_f32(x, stats, n, C, HW)
//   x (in place): (n, C, HW) = (x − mean)·inv with stats: (n, C, 2) = (mean, 1/divisor) per crop and channel
//   launch: one thread per element, block 256
// augment_normalize_zscore_f32(x, n, C, HW)
//   x (in place): per crop and channel (x − mean)/(std + 1e-6), population std   launch: one block of 256 per (crop, channel)
//
// CPU twin: src/backend/cpu/augment.rs   Tests: tests/parity/augment.rs

// Nearest-neighbour source index of cv2.INTER_NEAREST: min(floor(d · (1 / (out / in))), in − 1), in double
// exactly as the CPU path computes it (a float here could round an exact integer down at a boundary).
DEV int augment_nearest(int d, int size, int n_in) {
  const double inv = 1.0 / ((double)size / (double)n_in);
  const int s = (int)floor((double)d * inv);
  return s < n_in - 1 ? s : n_in - 1;
}

// Output element i of augment_render from an f32 source (src) or a u16 one (src16; the other is null).
DEV void augment_render_one(float* out, const float* src, const unsigned short* src16, const float* params,
                            int C, int crop, int size, long long i) {
  const int x = (int)(i % size);
  const int y = (int)((i / size) % size);
  const int c = (int)((i / ((long long)size * size)) % C);
  const int k = (int)(i / ((long long)size * size * C));
  const float* p = params + (long long)k * (8 + 2 * C);
  const int flip_ud = (int)p[0], flip_lr = (int)p[1], rot90 = (int)p[2];
  const int r0 = (int)p[3], rows = (int)p[4], c0 = (int)p[5], cols = (int)p[6], cell = (int)p[7];
  const float gamma = p[8 + c], offset = p[8 + C + c];
  // Position in the transformed image, then back through the D4 element to the stored crop.
  int ti = r0 + augment_nearest(y, size, rows);
  int tj = c0 + augment_nearest(x, size, cols);
  if (rot90) {  // np.rot90(k=1): out[i, j] = in[j, w − 1 − i]
    const int t = ti;
    ti = tj;
    tj = crop - 1 - t;
  }
  if (flip_lr) tj = crop - 1 - tj;
  if (flip_ud) ti = crop - 1 - ti;
  const long long at = (((long long)cell * C + c) * crop + ti) * crop + tj;
  const float v = (src16 ? (float)src16[at] : src[at]) / 65535.f;
  const float g = gamma == 1.f ? v : powf(v, gamma);
  out[i] = fminf(fmaxf(g + offset, 0.f), 1.f);
}

extern "C" __global__ void augment_render_f32(float* out, const float* src, const float* params, int n, int C,
                                              int crop, int size) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)n * C * size * size) return;  // guard
  augment_render_one(out, src, nullptr, params, C, crop, size, i);
}

extern "C" __global__ void augment_render_u16_f32(float* out, const unsigned short* src, const float* params,
                                                  int n, int C, int crop, int size) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)n * C * size * size) return;  // guard
  augment_render_one(out, nullptr, src, params, C, crop, size, i);
}

extern "C" __global__ void augment_normalize_ntc_f32(float* x, const float* stats, int n, int C, int HW) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)n * C * HW) return;  // guard
  const long long kc = i / HW;  // (crop, channel)
  x[i] = (x[i] - stats[2 * kc]) * stats[2 * kc + 1];
}

extern "C" __global__ void augment_normalize_zscore_f32(float* x, int n, int C, int HW) {
  __shared__ float scratch[32];
  const long long kc = blockIdx.x;
  if (kc >= (long long)n * C) return;  // guard (whole block)
  float* v = x + kc * HW;
  float s = 0.f;
  for (int j = threadIdx.x; j < HW; j += blockDim.x) s += v[j];
  const float mean = block_reduce_sum(s, scratch) / (float)HW;
  float q = 0.f;
  for (int j = threadIdx.x; j < HW; j += blockDim.x) {
    const float d = v[j] - mean;
    q += d * d;
  }
  const float var = block_reduce_sum(q, scratch) / (float)HW;
  const float inv = 1.f / (sqrtf(var) + 1e-6f);
  __syncthreads();  // every thread has read v for the statistics before any writes
  for (int j = threadIdx.x; j < HW; j += blockDim.x) v[j] = (v[j] - mean) * inv;
}
