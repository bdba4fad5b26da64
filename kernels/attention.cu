// attention.cu: multi-head self-attention core (no mask, no dropout): softmax(q·kᵀ·HS^-0.5)·v with the
// reference's qkv feature layout [3][NH][HS]. Plain batched kernels: at N ≤ 37 tokens launch count and
// layout matter more than FlashAttention-style tiling (performance.md §5).
// Reference: DINO vision_transformer.py Attention.forward.
//
// attention_forward_f32(out, att, qkv, B, N, NH, HS)
//   out: (B, N, C) heads concatenated; att: (B, NH, N, N) probabilities; qkv: (B, N, 3C), C = NH·HS
//   launch: one thread per (image, head, query row), block 256
// attention_backward_datt_f32(datt, dout, qkv, att, B, N, NH, HS)
//   datt (=): (B, NH, N, N) the gradient of the scaled scores, att ⊙ (dP − rowsum(att ⊙ dP))·HS^-0.5
//   launch: one thread per (image, head, query row), block 256
// attention_backward_dqkv_f32(dqkv, datt, dout, qkv, att, B, N, NH, HS)
//   dqkv (=): (B, N, 3C): dq = datt·k, dk = dattᵀ·q, dv = attᵀ·dout
//   launch: one thread per element of dqkv, block 256
//
// CPU twin: src/backend/cpu/attention.rs   Tests: tests/parity/attention.rs, tests/gradcheck/attention.rs

extern "C" __global__ void attention_forward_f32(float* out, float* att, const float* qkv, int B, int N, int NH, int HS) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * NH * N) return;  // guard
  const int i = idx % N, h = (idx / N) % NH, b = idx / (N * NH);
  const int C = NH * HS;
  const float scale = 1.f / sqrtf((float)HS);
  const float* x = qkv + (long long)b * N * 3 * C;
  const float* q = x + (long long)i * 3 * C + h * HS;
  float* a = att + (((long long)b * NH + h) * N + i) * N;
  float mx = F32_NEG_INF;
  for (int j = 0; j < N; ++j) {
    const float* k = x + (long long)j * 3 * C + C + h * HS;
    float dot = 0.f;
    for (int d = 0; d < HS; ++d) dot += q[d] * k[d];
    a[j] = dot * scale;
    mx = fmaxf(mx, a[j]);
  }
  float sum = 0.f;
  for (int j = 0; j < N; ++j) {
    a[j] = expf(a[j] - mx);
    sum += a[j];
  }
  for (int j = 0; j < N; ++j) a[j] /= sum;
  float* o = out + ((long long)b * N + i) * C + h * HS;
  for (int d = 0; d < HS; ++d) {
    float acc = 0.f;
    for (int j = 0; j < N; ++j) acc += a[j] * x[(long long)j * 3 * C + 2 * C + h * HS + d];
    o[d] = acc;
  }
}

extern "C" __global__ void attention_backward_datt_f32(float* datt, const float* dout, const float* qkv,
                                                       const float* att, int B, int N, int NH, int HS) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * NH * N) return;  // guard
  const int i = idx % N, h = (idx / N) % NH, b = idx / (N * NH);
  const int C = NH * HS;
  const float scale = 1.f / sqrtf((float)HS);
  const float* x = qkv + (long long)b * N * 3 * C;
  const float* dy = dout + ((long long)b * N + i) * C + h * HS;
  const float* a = att + (((long long)b * NH + h) * N + i) * N;
  float* da = datt + (((long long)b * NH + h) * N + i) * N;
  float dot = 0.f;
  for (int j = 0; j < N; ++j) {
    const float* v = x + (long long)j * 3 * C + 2 * C + h * HS;
    float g = 0.f;
    for (int d = 0; d < HS; ++d) g += dy[d] * v[d];
    da[j] = g;
    dot += a[j] * g;
  }
  for (int j = 0; j < N; ++j) da[j] = a[j] * (da[j] - dot) * scale;
}

extern "C" __global__ void attention_backward_dqkv_f32(float* dqkv, const float* datt, const float* dout,
                                                       const float* qkv, const float* att, int B, int N, int NH,
                                                       int HS) {
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const int C = NH * HS;
  if (idx >= (long long)B * N * 3 * C) return;  // guard
  const int col = (int)(idx % (3 * C));
  const int t = (int)((idx / (3 * C)) % N);
  const int b = (int)(idx / ((long long)3 * C * N));
  const int part = col / C, h = (col % C) / HS, d = col % HS;
  const float* x = qkv + (long long)b * N * 3 * C;
  const float* da = datt + ((long long)b * NH + h) * N * N;
  const float* a = att + ((long long)b * NH + h) * N * N;
  float acc = 0.f;
  if (part == 0) {  // dq[t] = Σ_j datt[t, j]·k[j]
    for (int j = 0; j < N; ++j) acc += da[t * N + j] * x[(long long)j * 3 * C + C + h * HS + d];
  } else if (part == 1) {  // dk[t] = Σ_i datt[i, t]·q[i]
    for (int i = 0; i < N; ++i) acc += da[i * N + t] * x[(long long)i * 3 * C + h * HS + d];
  } else {  // dv[t] = Σ_i att[i, t]·dout[i]
    for (int i = 0; i < N; ++i) acc += a[i * N + t] * dout[((long long)b * N + i) * C + h * HS + d];
  }
  dqkv[idx] = acc;
}
