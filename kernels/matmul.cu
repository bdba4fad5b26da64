// matmul.cu: the Linear layer out = inp·Wᵀ + b (torch addmm) and its backward: 16×16 shared-memory tiled
// SGEMMs (f32, the reference) and bf16 tensor-core GEMMs (mma.sync m16n8k16 → f32, ldmatrix, 3-stage
// cp.async pipeline) beside them. Reference: torch.nn.functional.linear.
//
// matmul_forward_f32(out, inp, weight, bias, R, I, O, has_bias)
//   out: (R, O); inp: (R, I); weight: (O, I); bias: (O) or null when has_bias = 0
//   launch: grid (CEIL_DIV(O,16), CEIL_DIV(R,16)), block (16,16)
// matmul_backward_input_f32(dinp, dout, weight, R, I, O)
//   dinp (=): (R, I) = dout (R, O)·weight (O, I)   launch: grid (CEIL_DIV(I,16), CEIL_DIV(R,16)), block (16,16)
// matmul_backward_weight_f32(dweight, dout, inp, R, I, O)
//   dweight (+=): (O, I) += doutᵀ·inp               launch: grid (CEIL_DIV(I,16), CEIL_DIV(O,16)), block (16,16)
// matmul_backward_bias_partial_f32(partial, dout, R, O)
//   partial (=): (CEIL_DIV(R,256), O) column sums of 256-row blocks, rows in a fixed order
//   launch: grid (CEIL_DIV(O,32), CEIL_DIV(R,256)), block (32,8)
// matmul_backward_bias_final_f32(dbias, partial, NB, O)
//   dbias (+=): (O) = Σ over the NB partial rows in order    launch: one thread per column, block 256
//
// bf16 path (operands bf16 with a padded leading dimension LD = round_up(cols, 8), zero padding;
// accumulation and outputs f32). Tile 128×64×32, 8 warps as 4 (M) × 2 (N), warp tile 32×32,
// 3 stages of 15 KiB static shared memory (45 KiB), rows padded by 16 B so ldmatrix is conflict-free.
// Tile per shape: launched with block 128 instead of 256, the same kernels compute 64×64 tiles with 4 warps
// (2 × 2), for GEMMs whose 128-row grid is under one wave of the GPU (the launch code picks, by shape).
// Occupancy claimed: 2 blocks of 256 threads per SM (≤ 128 registers, ≤ 48 KiB shared memory each).
// matmul_forward_round_bf16(out, inp, R, C, LD)
//   out: (R, LD) bf16 = round(inp (R, C) f32), columns C..LD zero   launch: one thread per out element
// matmul_forward_bf16(out, inp, weight, bias, R, I, O, has_bias)
//   out (=): (R, O) f32 = inp (R, LDI) · weight (O, LDI)ᵀ + bias, LDI = round_up(I, 8). The operands are
//   bf16 activations (LayerNorm, attention and GELU outputs), the optimizer's bf16 weight copy, or a
//   matmul_forward_round_bf16 copy where neither exists
//   launch: grid (CEIL_DIV(O,64), CEIL_DIV(R,BM)), block 2·BM, BM = 128 or 64 (per shape)
// matmul_forward_gelu_bf16(pre, act, act16, inp, weight, bias, R, I, O)
//   pre (=): (R, O) f32 = inp·weightᵀ + bias (kept for the GELU backward); GELU(pre), exact erf, in the same
//   epilogue, into act (f32) or, when act16 is non-null, into act16 (bf16: the next GEMM's operand)
//   launch: as matmul_forward_bf16
// matmul_forward_residual_bf16(out, inp, weight, bias, resid, scale, R, I, O, N)
//   out (=): (R, O) f32 = resid + scale[row / N]·(inp·weightᵀ + bias): the residual add with its drop-path
//   scale in the epilogue; resid: (R, O); scale: (R / N)   launch: as matmul_forward_bf16
// matmul_backward_input_bf16(dinp, dout, weight, R, I, O)
//   dinp (=): (R, I) f32 = dout (R, LDO) · weight (O, LDI)
//   launch: grid (CEIL_DIV(I,64), CEIL_DIV(R,BM)), block 2·BM, BM = 128 or 64 (per shape)
// matmul_backward_weight_bf16(partial, dout, inp, R, I, O, rows_per_split)
//   partial (=): (S, O, I) f32, split z = doutᵀ·inp over rows [z·rows_per_split, +rows_per_split); with one
//   split (S = 1) partial is dweight itself and the epilogue accumulates (+=), with no reduction pass
//   launch: grid (CEIL_DIV(I,64), CEIL_DIV(O,128), S), block 256; rows_per_split a multiple of 32
// matmul_backward_weight_reduce_f32(dweight, partial, N, S)
//   dweight (+=): (N) += Σ_z partial[z·N + i], z in order    launch: one thread per element
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

// Two-level column sums: block (32, 8) owns 32 columns of a 256-row block; thread (x, y) adds rows
// y, y+8, … in order, then the 8 partial sums are added in y order. No thread loops over all rows.
#define MM_BIAS_ROWS 256
extern "C" __global__ void matmul_backward_bias_partial_f32(float* partial, const float* dout, int R, int O) {
  __shared__ float s[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int o = blockIdx.x * 32 + tx, r0 = blockIdx.y * MM_BIAS_ROWS;
  float acc = 0.f;
  if (o < O)
    for (int r = r0 + ty; r < min(R, r0 + MM_BIAS_ROWS); r += 8) acc += dout[(long long)r * O + o];
  s[ty][tx] = acc;
  __syncthreads();
  if (ty != 0 || o >= O) return;  // guard
  float t = 0.f;
#pragma unroll
  for (int y = 0; y < 8; ++y) t += s[y][tx];
  partial[(long long)blockIdx.y * O + o] = t;
}

extern "C" __global__ void matmul_backward_bias_final_f32(float* dbias, const float* partial, int NB, int O) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= O) return;  // guard
  float acc = 0.f;
  for (int b = 0; b < NB; ++b) acc += partial[(long long)b * O + o];
  dbias[o] += acc;
}

// ---------------------------------------------------------------- bf16 tensor-core path
extern "C" __global__ void matmul_forward_round_bf16(bf16_t* out, const float* inp, int R, int C, int LD) {
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (long long)R * LD) return;  // guard
  const int r = (int)(idx / LD), c = (int)(idx % LD);
  out[idx] = c < C ? f32_to_bf16_rn(inp[(long long)r * C + c]) : (bf16_t)0;
}

#define MMB_BM 128  // rows of the large tile (8 warps); the small tile has 64 rows (4 warps)
#define MMB_BN 64
#define MMB_BK 32
#define MMB_STAGES 3
#define MMB_PAD 8  // bf16 elements (16 B) of padding per shared-memory row: conflict-free ldmatrix

// Shared memory (bf16 elements) of the large tile: A and B stages for the given operand layouts.
#define MMB_A_TILE(BM, A_K) ((A_K) ? (BM) * (MMB_BK + MMB_PAD) : MMB_BK * ((BM) + MMB_PAD))
#define MMB_B_TILE(B_K) ((B_K) ? MMB_BN * (MMB_BK + MMB_PAD) : MMB_BK * (MMB_BN + MMB_PAD))
#define MMB_SMEM(A_K, B_K) (MMB_STAGES * (MMB_A_TILE(MMB_BM, A_K) + MMB_B_TILE(B_K)))

// C (M, N) f32 = A·B over k in [k_begin, k_end) for the BM×64 tile at (blockIdx.y, blockIdx.x), computed
// by BM/16 warps arranged (BM/32) × 2, each a 32×32 warp tile. smem holds MMB_SMEM(A_K, B_K) elements.
// A_K: A(m, k) at A[m·lda + k] (K contiguous), else at A[k·lda + m] (M contiguous).
// B_K: B(k, n) at B[n·ldb + k] (K contiguous), else at B[k·ldb + n] (N contiguous).
// Contiguous dims are zero-padded to a multiple of 8, so every 16-byte chunk is either in the
// matrix (possibly partly padding) or wholly outside (zero-filled by cp.async with src size 0).
// Epilogue: epi(m, n, acc) for every element of the tile inside (M, N), called by the thread that holds it.
template <int BM, bool A_K, bool B_K, class Epi>
DEV void mmb_gemm_tile(bf16_t* smem, const bf16_t* A, int lda, const bf16_t* B, int ldb, int M, int N, int k_begin,
                       int k_end, Epi epi) {
  constexpr int NT = BM * 2;  // threads
  constexpr int A_TILE = MMB_A_TILE(BM, A_K);
  constexpr int B_TILE = MMB_B_TILE(B_K);
  constexpr int A_CHUNKS = BM * MMB_BK / 8, B_CHUNKS = MMB_BN * MMB_BK / 8;  // 16-byte chunks per k-tile
  static_assert(A_CHUNKS % NT == 0 && B_CHUNKS % NT == 0, "whole chunks per thread");
  bf16_t* As = smem;
  bf16_t* Bs = smem + MMB_STAGES * A_TILE;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * MMB_BN;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;

  // Issue the cp.async copies of k-tile starting at k0 into stage st.
  auto load_tile = [&](int st, int k0) {
    bf16_t* as = As + st * A_TILE;
    bf16_t* bs = Bs + st * B_TILE;
#pragma unroll
    for (int h = 0; h < A_CHUNKS / NT; ++h) {
      const int c = tid + h * NT;
      int row, col, sm, sk;  // smem row/col, matrix (m, k) of the chunk's first element
      if (A_K) { row = c >> 2; col = (c & 3) * 8; sm = m0 + row; sk = k0 + col; }
      else     { row = c / (BM / 8); col = (c % (BM / 8)) * 8; sk = k0 + row; sm = m0 + col; }
      const bool ok = sm < M && sk < k_end;
      const bf16_t* src = ok ? (A_K ? A + (long long)sm * lda + sk : A + (long long)sk * lda + sm) : A;
      cp_async_16(as + row * (A_K ? MMB_BK + MMB_PAD : BM + MMB_PAD) + col, src, ok ? 16 : 0);
    }
#pragma unroll
    for (int h = 0; h < B_CHUNKS / NT; ++h) {
      const int c = tid + h * NT;
      int row, col, sn, sk;
      if (B_K) { row = c >> 2; col = (c & 3) * 8; sn = n0 + row; sk = k0 + col; }
      else     { row = c >> 3; col = (c & 7) * 8; sk = k0 + row; sn = n0 + col; }
      const bool ok = sn < N && sk < k_end;
      const bf16_t* src = ok ? (B_K ? B + (long long)sn * ldb + sk : B + (long long)sk * ldb + sn) : B;
      cp_async_16(bs + row * (B_K ? MMB_BK + MMB_PAD : MMB_BN + MMB_PAD) + col, src, ok ? 16 : 0);
    }
  };

  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;

  const int ktiles = k_end > k_begin ? CEIL_DIV(k_end - k_begin, MMB_BK) : 0;
#pragma unroll
  for (int s = 0; s < MMB_STAGES - 1; ++s) {
    if (s < ktiles) load_tile(s, k_begin + s * MMB_BK);
    cp_async_commit();  // always commit: the group count stays uniform
  }
  const int mat = lane >> 3, r8 = lane & 7;
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<MMB_STAGES - 2>();  // tile kt has landed (for this thread) ...
    __syncthreads();                  // ... for every thread; and stage (kt-1)%3 is free
    const int nk = kt + MMB_STAGES - 1;
    if (nk < ktiles) load_tile(nk % MMB_STAGES, k_begin + nk * MMB_BK);
    cp_async_commit();
    const bf16_t* as = As + (kt % MMB_STAGES) * A_TILE;
    const bf16_t* bs = Bs + (kt % MMB_STAGES) * B_TILE;
#pragma unroll
    for (int kk = 0; kk < MMB_BK; kk += 16) {
      u32 a[2][4], b[4][2];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int mb = wm + mt * 16;
        if (A_K) ldmatrix_x4(a[mt], as + (mb + r8 + 8 * (mat & 1)) * (MMB_BK + MMB_PAD) + kk + 8 * (mat >> 1));
        else ldmatrix_x4_trans(a[mt], as + (kk + r8 + 8 * (mat >> 1)) * (BM + MMB_PAD) + mb + 8 * (mat & 1));
      }
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        const int nb = wn + np * 16;
        u32 t[4];
        if (B_K) ldmatrix_x4(t, bs + (nb + r8 + 8 * (mat >> 1)) * (MMB_BK + MMB_PAD) + kk + 8 * (mat & 1));
        else ldmatrix_x4_trans(t, bs + (kk + r8 + 8 * (mat & 1)) * (MMB_BN + MMB_PAD) + nb + 8 * (mat >> 1));
        b[2 * np][0] = t[0]; b[2 * np][1] = t[1]; b[2 * np + 1][0] = t[2]; b[2 * np + 1][1] = t[3];
      }
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma_bf16_16816(acc[mt][nt], a[mt], b[nt]);
    }
  }
  cp_async_wait<0>();

  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int r = m0 + wm + mt * 16 + g + 8 * (q >> 1), col = n0 + wn + nt * 8 + 2 * t4 + (q & 1);
        if (r < M && col < N) epi(r, col, acc[mt][nt][q]);
      }
}

// The tile chosen by the launch: block 256 → 128×64 tiles, block 128 → 64×64 tiles (GEMMs whose
// 128-row grid would leave SMs idle). Both share the kernel's one static shared-memory array.
template <bool A_K, bool B_K, class Epi>
DEV void mmb_gemm(bf16_t* smem, const bf16_t* A, int lda, const bf16_t* B, int ldb, int M, int N, int k_begin,
                  int k_end, Epi epi) {
  if (blockDim.x == 128) mmb_gemm_tile<64, A_K, B_K>(smem, A, lda, B, ldb, M, N, k_begin, k_end, epi);
  else mmb_gemm_tile<MMB_BM, A_K, B_K>(smem, A, lda, B, ldb, M, N, k_begin, k_end, epi);
}

DEV float mmb_gelu(float v) { return v * 0.5f * (1.f + erff(v * SQRT1_2_F)); }

extern "C" __global__ void __launch_bounds__(256, 2)
    matmul_forward_bf16(float* out, const bf16_t* inp, const bf16_t* weight, const float* bias, int R, int I, int O,
                        int has_bias) {
  const int ld = CEIL_DIV(I, 8) * 8;
  const float* b = has_bias ? bias : nullptr;
  __shared__ __align__(128) bf16_t smem[MMB_SMEM(true, true)];
  mmb_gemm<true, true>(smem, inp, ld, weight, ld, R, O, 0, I, [=](int r, int c, float a) {
    out[(long long)r * O + c] = a + (b ? b[c] : 0.f);
  });
}

extern "C" __global__ void __launch_bounds__(256, 2)
    matmul_forward_gelu_bf16(float* pre, float* act, bf16_t* act16, const bf16_t* inp, const bf16_t* weight,
                             const float* bias, int R, int I, int O) {
  const int ld = CEIL_DIV(I, 8) * 8;
  __shared__ __align__(128) bf16_t smem[MMB_SMEM(true, true)];
  mmb_gemm<true, true>(smem, inp, ld, weight, ld, R, O, 0, I, [=](int r, int c, float a) {
    const long long k = (long long)r * O + c;
    const float v = a + bias[c];
    pre[k] = v;
    if (act16) act16[k] = f32_to_bf16_rn(mmb_gelu(v));
    else act[k] = mmb_gelu(v);
  });
}

extern "C" __global__ void __launch_bounds__(256, 2)
    matmul_forward_residual_bf16(float* out, const bf16_t* inp, const bf16_t* weight, const float* bias,
                                 const float* resid, const float* scale, int R, int I, int O, int N) {
  const int ld = CEIL_DIV(I, 8) * 8;
  __shared__ __align__(128) bf16_t smem[MMB_SMEM(true, true)];
  mmb_gemm<true, true>(smem, inp, ld, weight, ld, R, O, 0, I, [=](int r, int c, float a) {
    const long long k = (long long)r * O + c;
    out[k] = resid[k] + scale[r / N] * (a + bias[c]);
  });
}

extern "C" __global__ void __launch_bounds__(256, 2)
    matmul_backward_input_bf16(float* dinp, const bf16_t* dout, const bf16_t* weight, int R, int I, int O) {
  __shared__ __align__(128) bf16_t smem[MMB_SMEM(true, false)];
  mmb_gemm<true, false>(smem, dout, CEIL_DIV(O, 8) * 8, weight, CEIL_DIV(I, 8) * 8, R, I, 0, O,
                             [=](int r, int c, float a) { dinp[(long long)r * I + c] = a; });
}

extern "C" __global__ void __launch_bounds__(256, 2)
    matmul_backward_weight_bf16(float* partial, const bf16_t* dout, const bf16_t* inp, int R, int I, int O,
                                int rows_per_split) {
  const int k0 = blockIdx.z * rows_per_split, k1 = min(R, k0 + rows_per_split);
  float* p = partial + (long long)blockIdx.z * O * I;
  __shared__ __align__(128) bf16_t smem[MMB_SMEM(false, false)];
  const bool whole = gridDim.z == 1;  // one split: partial is dweight itself, accumulated in place
  mmb_gemm<false, false>(smem, dout, CEIL_DIV(O, 8) * 8, inp, CEIL_DIV(I, 8) * 8, O, I, k0, k1,
                         [=](int r, int c, float a) {
                           if (whole) p[(long long)r * I + c] += a;
                           else p[(long long)r * I + c] = a;
                         });
}

extern "C" __global__ void matmul_backward_weight_reduce_f32(float* dweight, const float* partial, int N, int S) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N) return;  // guard
  float acc = 0.f;
  for (int z = 0; z < S; ++z) acc += partial[(long long)z * N + i];
  dweight[i] += acc;
}
