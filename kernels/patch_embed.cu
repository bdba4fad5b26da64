// patch_embed.cu: the stride-p Conv2d patch embedding as im2col (the matmul is matmul.cu) and token
// assembly: CLS token, positional embeddings interpolated from the learned grid by the fixed bicubic map
// (src/model/pos.rs, algorithm.md §1.3), and their backward (the transpose of the map).
// Reference: DINO vision_transformer.py PatchEmbed + interpolate_pos_encoding.
//
// patch_embed_im2col_f32(out, img, B, CH, H, W, p)
//   out: (B·P, CH·p·p) columns in Conv2d weight order (ch, ky, kx); img: (B, CH, H, W)
//   launch: one thread per output element, block 256
// patch_embed_tokens_forward_f32(x, patch_out, cls, pos, interp, B, P, G2, C)
//   x: (B, N, C), N = 1 + P; patch_out: (B·P, C); cls: (C); pos: (1 + G2, C); interp: (P, G2)
//   launch: one thread per element of x, block 256
// patch_embed_tokens_backward_patch_f32(dpatch_out, dx, B, P, C)
//   dpatch_out (=): (B·P, C); dx: (B, N, C)   launch: one thread per element of dpatch_out
// patch_embed_tokens_backward_sum_f32(sum, dx, B, N, C)
//   sum (=): (N, C) = Σ_b dx[b] in image order   launch: one thread per element of sum
// patch_embed_tokens_backward_params_f32(dcls, dpos, sum, interp, P, G2, C)
//   dcls (+=): (C); dpos (+=): (1 + G2, C) = [sum[0]; interpᵀ·sum[1..]]   launch: one thread per element of dpos
//
// CPU twin: src/backend/cpu/patch_embed.rs   Tests: tests/parity/patch_embed.rs, tests/gradcheck/patch_embed.rs

extern "C" __global__ void patch_embed_im2col_f32(float* out, const float* img, int B, int CH, int H, int W, int p) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const int gh = H / p, gw = W / p, k = CH * p * p;
  const long long n = (long long)B * gh * gw * k;
  if (i >= n) return;  // guard
  const int col = (int)(i % k);
  const long long row = i / k;
  const int b = (int)(row / (gh * gw)), pi = (int)(row % (gh * gw));
  const int py = pi / gw, px = pi % gw;
  const int c = col / (p * p), ky = (col / p) % p, kx = col % p;
  out[i] = img[(((long long)b * CH + c) * H + py * p + ky) * W + px * p + kx];
}

extern "C" __global__ void patch_embed_tokens_forward_f32(float* x, const float* patch_out, const float* cls,
                                                          const float* pos, const float* interp, int B, int P,
                                                          int G2, int C) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const int N = 1 + P;
  if (i >= (long long)B * N * C) return;  // guard
  const int c = (int)(i % C);
  const int t = (int)((i / C) % N);
  const int b = (int)(i / ((long long)N * C));
  if (t == 0) {
    x[i] = cls[c] + pos[c];
    return;
  }
  const float* w = interp + (long long)(t - 1) * G2;
  float acc = 0.f;
  for (int g = 0; g < G2; ++g) {
    const float wg = w[g];
    if (wg != 0.f) acc += wg * pos[(long long)(1 + g) * C + c];
  }
  x[i] = patch_out[((long long)b * P + t - 1) * C + c] + acc;
}

extern "C" __global__ void patch_embed_tokens_backward_patch_f32(float* dpatch_out, const float* dx, int B, int P, int C) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)B * P * C) return;  // guard
  const int c = (int)(i % C);
  const long long bp = i / C;
  const int b = (int)(bp / P), t = (int)(bp % P);
  dpatch_out[i] = dx[((long long)b * (1 + P) + 1 + t) * C + c];
}

extern "C" __global__ void patch_embed_tokens_backward_sum_f32(float* sum, const float* dx, int B, int N, int C) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * C) return;  // guard
  float acc = 0.f;
  for (int b = 0; b < B; ++b) acc += dx[(long long)b * N * C + i];
  sum[i] = acc;
}

extern "C" __global__ void patch_embed_tokens_backward_params_f32(float* dcls, float* dpos, const float* sum,
                                                                  const float* interp, int P, int G2, int C) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (1 + G2) * C) return;  // guard
  const int c = i % C, t = i / C;
  if (t == 0) {
    dcls[c] += sum[c];
    dpos[c] += sum[c];
    return;
  }
  const int g = t - 1;
  float acc = 0.f;
  for (int p = 0; p < P; ++p) {
    const float w = interp[(long long)p * G2 + g];
    if (w != 0.f) acc += w * sum[(1 + p) * C + c];
  }
  dpos[i] += acc;
}
