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
// bf16 tensor-core path for short sequences (N ≤ 64, HS ≤ 64), FlashAttention's way: one CTA per image
// (all heads in turn), 4 warps; q, k, v (and dout) rounded to bf16 in shared memory (zero-padded to
// NP = round_up(N, 16) rows and HP = round_up(HS, 16) columns, rows padded by 16 B: conflict-free
// ldmatrix); S = q·kᵀ and P·v on mma.sync with the softmax in registers (f32); the probabilities are
// never written to global memory: the forward keeps only the row log-sum-exp, the backward recomputes P.
// Rounding points (the CPU twin's): q, k, v, dout and P, dS as mma operands; everything else f32.
// Occupancy claimed: 4 blocks of 128 threads per SM (≤ 128 registers; dynamic shared memory
// 3·NP·(HP+8)·2 B forward, (4·NP·(HP+8) + 2·NP·(NP+8))·2 B backward: ≤ 55 KiB).
// attention_forward_bf16(out, out16, lse, qkv, B, N, NH, HS)
//   out (=): (B, N, C) f32, or out16 (=) the same in bf16 when non-null (the projection GEMM's operand); lse (=): (B, NH, N) log Σ_j exp(s_ij) of the scaled scores (what the backward needs)
//   launch: grid B, block 128, dynamic smem 3·NP·(HP+8)·2 B
// attention_backward_bf16(dqkv, dout, qkv, lse, B, N, NH, HS)
//   dqkv (=): (B, N, 3C)   launch: grid B, block 128, dynamic smem (4·NP·(HP+8) + 2·NP·(NP+8))·2 B
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

// ---------------------------------------------------------------- bf16 tensor-core path
#define ATT_MAX 64  // max tokens and head size of the bf16 path (8 n8 tiles)

DEV u32 att_pack(float lo, float hi) { return (u32)f32_to_bf16_rn(lo) | ((u32)f32_to_bf16_rn(hi) << 16); }

// Rows [0, NP) × cols [0, HP) of one head's q, k or v (part 0, 1, 2 of qkv) or of dout (src = dout,
// stride C, part 0), rounded to bf16, zero outside (N, HS).
DEV void att_load(bf16_t* dst, int ld, const float* src, int stride, int off, int N, int HS, int NP, int HP) {
  for (int idx = threadIdx.x; idx < NP * HP; idx += blockDim.x) {
    const int r = idx / HP, d = idx % HP;
    dst[r * ld + d] = (r < N && d < HS) ? f32_to_bf16_rn(src[(long long)r * stride + off + d]) : (bf16_t)0;
  }
}

// acc[nt] (16 × 8 tiles, nt < NT) = A(16 rows at a, K-contiguous, KT k16 tiles) · B where B(k, n) is
// b[n·ld + k] (K-contiguous: ldmatrix) for n tiles of 8.
DEV void att_mma_kc(float acc[8][4], const bf16_t* a, int lda, const bf16_t* b, int ldb, int KT, int NT) {
  const int lane = threadIdx.x & 31, mat = lane >> 3, r8 = lane & 7;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[nt][q] = 0.f;
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    if (kt >= KT) break;
    u32 af[4];
    ldmatrix_x4(af, a + (r8 + 8 * (mat & 1)) * lda + kt * 16 + 8 * (mat >> 1));
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      if (2 * np >= NT) break;
      u32 t[4];
      ldmatrix_x4(t, b + (np * 16 + r8 + 8 * (mat >> 1)) * ldb + kt * 16 + 8 * (mat & 1));
      const u32 b0[2] = {t[0], t[1]}, b1[2] = {t[2], t[3]};
      mma_bf16_16816(acc[2 * np], af, b0);
      mma_bf16_16816(acc[2 * np + 1], af, b1);
    }
  }
}

// acc[nt] += A · B where A is given as register fragments af[kt] (KT k16 tiles) and B(k, n) = b[k·ld + n]
// (N-contiguous: ldmatrix.trans), NT n8 tiles.
DEV void att_mma_rn(float acc[8][4], const u32 af[4][4], const bf16_t* b, int ldb, int KT, int NT) {
  const int lane = threadIdx.x & 31, mat = lane >> 3, r8 = lane & 7;
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    if (kt >= KT) break;
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      if (2 * np >= NT) break;
      u32 t[4];
      ldmatrix_x4_trans(t, b + (kt * 16 + r8 + 8 * (mat & 1)) * ldb + np * 16 + 8 * (mat >> 1));
      const u32 b0[2] = {t[0], t[1]}, b1[2] = {t[2], t[3]};
      mma_bf16_16816(acc[2 * np], af[kt], b0);
      mma_bf16_16816(acc[2 * np + 1], af[kt], b1);
    }
  }
}

// A fragments of a 16-row tile kept as 16 × 8 f32 accumulator tiles (k16 tile kt = n8 tiles 2kt, 2kt+1).
DEV void att_frags(u32 af[4][4], const float s[8][4]) {
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    af[kt][0] = att_pack(s[2 * kt][0], s[2 * kt][1]);
    af[kt][1] = att_pack(s[2 * kt][2], s[2 * kt][3]);
    af[kt][2] = att_pack(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    af[kt][3] = att_pack(s[2 * kt + 1][2], s[2 * kt + 1][3]);
  }
}

// Scaled, masked scores of query tile mt: s = (q·kᵀ)·scale, −inf for keys ≥ N.
DEV void att_scores(float s[8][4], const bf16_t* Qs, const bf16_t* Ks, int ld, int mt, int N, int KT, int NT,
                    float scale) {
  att_mma_kc(s, Qs + mt * 16 * ld, ld, Ks, ld, KT, NT);
  const int t4 = threadIdx.x & 3;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int q = 0; q < 4; ++q) s[nt][q] = (nt * 8 + 2 * t4 + (q & 1) < N) ? s[nt][q] * scale : F32_NEG_INF;
}

extern "C" __global__ void __launch_bounds__(128, 4)
    attention_forward_bf16(float* out, bf16_t* out16, float* lse, const float* qkv, int B, int N, int NH, int HS) {
  DYNAMIC_SHARED(bf16_t, smem);
  const int b = blockIdx.x;
  if (b >= B) return;  // guard
  const int C = NH * HS, NP = CEIL_DIV(N, 16) * 16, HP = CEIL_DIV(HS, 16) * 16, ld = HP + 8;
  const int NT = NP / 8, HT = HP / 8, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  bf16_t *Qs = smem, *Ks = Qs + NP * ld, *Vs = Ks + NP * ld;
  const float scale = 1.f / sqrtf((float)HS);
  const float* x = qkv + (long long)b * N * 3 * C;
  for (int h = 0; h < NH; ++h) {
    __syncthreads();  // the previous head's tiles are no longer read
    att_load(Qs, ld, x, 3 * C, h * HS, N, HS, NP, HP);
    att_load(Ks, ld, x, 3 * C, C + h * HS, N, HS, NP, HP);
    att_load(Vs, ld, x, 3 * C, 2 * C + h * HS, N, HS, NP, HP);
    __syncthreads();
    for (int mt = warp; mt < NP / 16; mt += 4) {
      float s[8][4];
      att_scores(s, Qs, Ks, ld, mt, N, HP / 16, NT, scale);
      // Softmax of rows g (q = 0, 1) and g + 8 (q = 2, 3); a row lives in the 4 lanes of a quad.
      float m[2] = {F32_NEG_INF, F32_NEG_INF}, l[2] = {0.f, 0.f};
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) m[q >> 1] = fmaxf(m[q >> 1], s[nt][q]);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        m[i] = fmaxf(m[i], __shfl_xor_sync(0xffffffffu, m[i], 1));
        m[i] = fmaxf(m[i], __shfl_xor_sync(0xffffffffu, m[i], 2));
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          s[nt][q] = nt < NT ? expf(s[nt][q] - m[q >> 1]) : 0.f;
          l[q >> 1] += s[nt][q];
        }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
      }
      const float inv[2] = {1.f / l[0], 1.f / l[1]};
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) s[nt][q] *= inv[q >> 1];
      u32 pf[4][4];
      att_frags(pf, s);
      float o[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) o[nt][q] = 0.f;
      att_mma_rn(o, pf, Vs, ld, NP / 16, HT);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = mt * 16 + g + 8 * i;
        if (t4 == 0 && row < N) lse[((long long)b * NH + h) * N + row] = m[i] + logf(l[i]);
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int row = mt * 16 + g + 8 * (q >> 1), col = nt * 8 + 2 * t4 + (q & 1);
          if (row < N && col < HS) {
            const long long k = ((long long)b * N + row) * C + h * HS + col;
            if (out16) out16[k] = f32_to_bf16_rn(o[nt][q]);
            else out[k] = o[nt][q];
          }
        }
    }
  }
}

extern "C" __global__ void __launch_bounds__(128, 4)
    attention_backward_bf16(float* dqkv, const float* dout, const float* qkv, const float* lse, int B, int N, int NH,
                            int HS) {
  DYNAMIC_SHARED(bf16_t, smem);
  const int b = blockIdx.x;
  if (b >= B) return;  // guard
  const int C = NH * HS, NP = CEIL_DIV(N, 16) * 16, HP = CEIL_DIV(HS, 16) * 16, ld = HP + 8, ldp = NP + 8;
  const int NT = NP / 8, HT = HP / 8, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3, mat = lane >> 3, r8 = lane & 7;
  bf16_t *Qs = smem, *Ks = Qs + NP * ld, *Vs = Ks + NP * ld, *Ds = Vs + NP * ld;
  bf16_t *Ps = Ds + NP * ld, *Ss = Ps + NP * ldp;
  const float scale = 1.f / sqrtf((float)HS);
  const float* x = qkv + (long long)b * N * 3 * C;
  float* dx = dqkv + (long long)b * N * 3 * C;
  for (int h = 0; h < NH; ++h) {
    __syncthreads();
    att_load(Qs, ld, x, 3 * C, h * HS, N, HS, NP, HP);
    att_load(Ks, ld, x, 3 * C, C + h * HS, N, HS, NP, HP);
    att_load(Vs, ld, x, 3 * C, 2 * C + h * HS, N, HS, NP, HP);
    att_load(Ds, ld, dout + (long long)b * N * C, C, h * HS, N, HS, NP, HP);
    __syncthreads();
    // Pass 1, per query tile: P (recomputed from lse), dP = dout·vᵀ, dS = P ⊙ (dP − Σ_j P·dP), dq = dS·k.
    for (int mt = warp; mt < NP / 16; mt += 4) {
      float p[8][4], dp[8][4];
      att_scores(p, Qs, Ks, ld, mt, N, HP / 16, NT, scale);
      float L[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = mt * 16 + g + 8 * i;
        L[i] = row < N ? lse[((long long)b * NH + h) * N + row] : 0.f;
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int row = mt * 16 + g + 8 * (q >> 1);
          p[nt][q] = (nt < NT && row < N) ? expf(p[nt][q] - L[q >> 1]) : 0.f;
        }
      att_mma_kc(dp, Ds + mt * 16 * ld, ld, Vs, ld, HP / 16, NT);
      float D[2] = {0.f, 0.f};
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) D[q >> 1] += p[nt][q] * dp[nt][q];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        D[i] += __shfl_xor_sync(0xffffffffu, D[i], 1);
        D[i] += __shfl_xor_sync(0xffffffffu, D[i], 2);
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) dp[nt][q] = p[nt][q] * (dp[nt][q] - D[q >> 1]);  // dS
      // P and dS (bf16) for pass 2, rows of this tile.
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        if (nt >= NT) break;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int row = mt * 16 + g + 8 * i, col = nt * 8 + 2 * t4;
          *(u32*)(Ps + row * ldp + col) = att_pack(p[nt][2 * i], p[nt][2 * i + 1]);
          *(u32*)(Ss + row * ldp + col) = att_pack(dp[nt][2 * i], dp[nt][2 * i + 1]);
        }
      }
      u32 sf[4][4];
      att_frags(sf, dp);
      float dq[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) dq[nt][q] = 0.f;
      att_mma_rn(dq, sf, Ks, ld, NP / 16, HT);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int row = mt * 16 + g + 8 * (q >> 1), col = nt * 8 + 2 * t4 + (q & 1);
          if (row < N && col < HS) dx[(long long)row * 3 * C + h * HS + col] = dq[nt][q] * scale;
        }
    }
    __syncthreads();  // P and dS of every query tile are in shared memory
    // Pass 2, per key tile: dv = Pᵀ·dout, dk = dSᵀ·q (A operands transposed out of shared memory).
    for (int kt16 = warp; kt16 < NP / 16; kt16 += 4) {
      u32 pf[4][4], sf[4][4];
#pragma unroll
      for (int qt = 0; qt < 4; ++qt) {
        if (qt >= NP / 16) break;
        ldmatrix_x4_trans(pf[qt], Ps + (qt * 16 + r8 + 8 * (mat >> 1)) * ldp + kt16 * 16 + 8 * (mat & 1));
        ldmatrix_x4_trans(sf[qt], Ss + (qt * 16 + r8 + 8 * (mat >> 1)) * ldp + kt16 * 16 + 8 * (mat & 1));
      }
      float dv[8][4], dk[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) dv[nt][q] = dk[nt][q] = 0.f;
      att_mma_rn(dv, pf, Ds, ld, NP / 16, HT);
      att_mma_rn(dk, sf, Qs, ld, NP / 16, HT);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int row = kt16 * 16 + g + 8 * (q >> 1), col = nt * 8 + 2 * t4 + (q & 1);
          if (row < N && col < HS) {
            dx[(long long)row * 3 * C + C + h * HS + col] = dk[nt][q] * scale;
            dx[(long long)row * 3 * C + 2 * C + h * HS + col] = dv[nt][q];
          }
        }
    }
  }
}
