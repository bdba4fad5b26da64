// selftest.cu: kernels that exercise the SIMT emulator itself (not part of the engine): shuffles, ballot,
// atomics, block barriers, dynamic shared memory poisoning, deadlock detection, and the bf16 tensor-core
// path (mma.sync m16n8k16 and ldmatrix) that the fast GEMM will use. The same text compiles under NVRTC
// (tests/kernels_compile.rs, with the cuda_runtime headers for cuda_bf16.h) and under g++ (build.rs).
// Launchers for the emulator are at the end (CPU build only).
//
// CPU twins: the naive references in tests/parity/simt_emulator.rs

#if defined(__CUDACC__)
  #include <cuda_bf16.h>
#endif
typedef __nv_bfloat16 bf16;

// Pack two bf16 (lo = lower index element) into one .b32 register as mma expects.
DEV u32 st_pack_bf16x2(bf16 lo, bf16 hi) {
  return (u32)__bfloat16_as_ushort(lo) | ((u32)__bfloat16_as_ushort(hi) << 16);
}

// D = A(16x16,row)·B(16x8,col) + C, bf16 inputs, f32 accumulate. Warp-collective.
// Fragment layout: PTX ISA "Matrix Fragments for mma.m16n8k16 with floating point type".
DEV void st_mma_m16n8k16_bf16(float d[4], const u32 a[4], const u32 b[2], const float c[4]) {
#if defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
        "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#elif !SIMT_GPU
  simt::mma_m16n8k16_bf16_f32(d, a, b, c);
#endif
}

DEV void st_ldmatrix_x4(u32 r[4], const void* row_ptr) {
#if defined(__CUDA_ARCH__)
  const u32 a = (u32)__cvta_generic_to_shared(row_ptr);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#elif !SIMT_GPU
  simt::ldmatrix_x4(r, row_ptr);
#endif
}
DEV void st_ldmatrix_x2_trans(u32 r[2], const void* row_ptr) {
#if defined(__CUDA_ARCH__)
  const u32 a = (u32)__cvta_generic_to_shared(row_ptr);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1]) : "r"(a));
#elif !SIMT_GPU
  simt::ldmatrix_x2_trans(r, row_ptr);
#endif
}

// Grid-stride sum: registers → warp shuffles → shared memory → atomicAdd.
extern "C" __global__ void __launch_bounds__(256) selftest_reduce_sum_f32(const float* x, float* out, int n) {
  __shared__ float warp_sums[32];
  float acc = 0.f;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) acc += x[i];
  acc = warp_reduce_sum(acc);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    const int nw = (blockDim.x + 31) >> 5;
    float v = lane < nw ? warp_sums[lane] : 0.f;
    v = warp_reduce_sum(v);
    v = __shfl_sync(0xffffffffu, v, 0);
    if (lane == 0) atomicAdd(out, v);
  }
}

// Warp collectives: out[tid] packs shfl_up/down/xor and ballot/any/all results for one warp of 32.
extern "C" __global__ void selftest_warp_ops(int* out) {
  const int lane = threadIdx.x & 31;
  const int up = __shfl_up_sync(0xffffffffu, lane, 1);
  const int down = __shfl_down_sync(0xffffffffu, lane, 2);
  const int x = __shfl_xor_sync(0xffffffffu, lane, 5);
  const unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  const int any = __any_sync(0xffffffffu, lane == 7);
  const int all = __all_sync(0xffffffffu, lane < 32);
  out[6 * threadIdx.x + 0] = up;
  out[6 * threadIdx.x + 1] = down;
  out[6 * threadIdx.x + 2] = x;
  out[6 * threadIdx.x + 3] = (int)ballot;
  out[6 * threadIdx.x + 4] = any;
  out[6 * threadIdx.x + 5] = all;
}

// Reads dynamic shared memory before writing it: the emulator poisons it with 0xFF bytes per block.
extern "C" __global__ void selftest_read_uninit_smem(float* out) {
  DYNAMIC_SHARED(float, buf);
  out[blockIdx.x * blockDim.x + threadIdx.x] = buf[threadIdx.x];
}

// A block reduction missing its second __syncthreads: wrong results, deterministically (a race detector).
extern "C" __global__ void selftest_racy_sum(const float* x, float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  if (threadIdx.x < 32) s[threadIdx.x] += s[threadIdx.x + 32];
  // missing __syncthreads() here
  if (threadIdx.x == 0) {
    float acc = 0.f;
    for (int i = 0; i < 32; ++i) acc += s[i];
    out[0] = acc;
  }
}

// Divergent barrier: must come back as a deadlock error, not hang.
extern "C" __global__ void selftest_divergent_sync(float* out) {
  if (threadIdx.x < 100) __syncthreads();
  else __syncwarp();
  out[threadIdx.x] = 1.f;
}

// bf16 tensor-core GEMM via mma.sync m16n8k16, fragments built by hand. Block = 4 warps, tile 32×16.
// A: [M,K] row-major bf16; B: [K,N] row-major bf16; C: [M,N] f32. M%32==0, N%16==0, K%16==0.
extern "C" __global__ void selftest_gemm_bf16_mma(const bf16* A, const bf16* B, float* C, int M, int N, int K) {
  __shared__ bf16 As[32][16 + 8];
  __shared__ bf16 Bs[16][16 + 8];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m0 = blockIdx.y * 32, n0 = blockIdx.x * 16;
  const int wm = (warp >> 1) * 16, wn = (warp & 1) * 8;
  const int g = lane >> 2, t = lane & 3;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int k0 = 0; k0 < K; k0 += 16) {
    for (int i = tid; i < 32 * 16; i += 128) As[i / 16][i % 16] = A[(m0 + i / 16) * K + k0 + i % 16];
    for (int i = tid; i < 16 * 16; i += 128) Bs[i / 16][i % 16] = B[(k0 + i / 16) * N + n0 + i % 16];
    __syncthreads();
    u32 a[4], b[2];
    a[0] = st_pack_bf16x2(As[wm + g][2 * t], As[wm + g][2 * t + 1]);
    a[1] = st_pack_bf16x2(As[wm + g + 8][2 * t], As[wm + g + 8][2 * t + 1]);
    a[2] = st_pack_bf16x2(As[wm + g][2 * t + 8], As[wm + g][2 * t + 9]);
    a[3] = st_pack_bf16x2(As[wm + g + 8][2 * t + 8], As[wm + g + 8][2 * t + 9]);
    b[0] = st_pack_bf16x2(Bs[2 * t][wn + g], Bs[2 * t + 1][wn + g]);
    b[1] = st_pack_bf16x2(Bs[2 * t + 8][wn + g], Bs[2 * t + 9][wn + g]);
    st_mma_m16n8k16_bf16(acc, a, b, acc);
    __syncthreads();
  }
  C[(m0 + wm + g) * N + n0 + wn + 2 * t] = acc[0];
  C[(m0 + wm + g) * N + n0 + wn + 2 * t + 1] = acc[1];
  C[(m0 + wm + g + 8) * N + n0 + wn + 2 * t] = acc[2];
  C[(m0 + wm + g + 8) * N + n0 + wn + 2 * t + 1] = acc[3];
}

// The same GEMM with fragments loaded by ldmatrix (A: x4, B: x2.trans) from 16-byte aligned smem rows.
extern "C" __global__ void selftest_gemm_bf16_ldmatrix(const bf16* A, const bf16* B, float* C, int M, int N, int K) {
  __shared__ __align__(16) bf16 As[32][16 + 8];
  __shared__ __align__(16) bf16 Bs[16][16 + 8];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m0 = blockIdx.y * 32, n0 = blockIdx.x * 16;
  const int wm = (warp >> 1) * 16, wn = (warp & 1) * 8;
  const int g = lane >> 2, t = lane & 3;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int k0 = 0; k0 < K; k0 += 16) {
    for (int i = tid; i < 32 * 16; i += 128) As[i / 16][i % 16] = A[(m0 + i / 16) * K + k0 + i % 16];
    for (int i = tid; i < 16 * 16; i += 128) Bs[i / 16][i % 16] = B[(k0 + i / 16) * N + n0 + i % 16];
    __syncthreads();
    u32 a[4], b[2];
    st_ldmatrix_x4(a, &As[wm + (lane & 15)][(lane >> 4) * 8]);
    st_ldmatrix_x2_trans(b, &Bs[lane & 15][wn]);
    st_mma_m16n8k16_bf16(acc, a, b, acc);
    __syncthreads();
  }
  C[(m0 + wm + g) * N + n0 + wn + 2 * t] = acc[0];
  C[(m0 + wm + g) * N + n0 + wn + 2 * t + 1] = acc[1];
  C[(m0 + wm + g + 8) * N + n0 + wn + 2 * t] = acc[2];
  C[(m0 + wm + g + 8) * N + n0 + wn + 2 * t + 1] = acc[3];
}

#if !SIMT_GPU
extern "C" {
int simt_selftest_reduce_sum(unsigned grid, unsigned block, const float* x, float* out, int n) {
  return simt::launch(dim3(grid), dim3(block), 0, selftest_reduce_sum_f32, x, out, n);
}
int simt_selftest_warp_ops(int* out) { return simt::launch(dim3(1), dim3(32), 0, selftest_warp_ops, out); }
int simt_selftest_read_uninit_smem(float* out, unsigned blocks, unsigned threads) {
  return simt::launch(dim3(blocks), dim3(threads), threads * sizeof(float), selftest_read_uninit_smem, out);
}
int simt_selftest_racy_sum(const float* x, float* out) { return simt::launch(dim3(1), dim3(64), 0, selftest_racy_sum, x, out); }
int simt_selftest_divergent_sync(float* out) { return simt::launch(dim3(1), dim3(256), 0, selftest_divergent_sync, out); }
int simt_selftest_gemm_bf16_mma(const unsigned short* A, const unsigned short* B, float* C, int M, int N, int K) {
  return simt::launch(dim3(N / 16, M / 32), dim3(128), 0, selftest_gemm_bf16_mma, (const bf16*)A, (const bf16*)B, C, M, N, K);
}
int simt_selftest_gemm_bf16_ldmatrix(const unsigned short* A, const unsigned short* B, float* C, int M, int N, int K) {
  return simt::launch(dim3(N / 16, M / 32), dim3(128), 0, selftest_gemm_bf16_ldmatrix, (const bf16*)A, (const bf16*)B, C, M, N, K);
}
void simt_set_schedule(int reverse) { simt::set_schedule_override(reverse); }
}
#endif
