// common.cuh: prepended to every kernel module (NVRTC) and included once before all kernels (SIMT build).
// One kernel text compiles under NVRTC (__CUDACC__ defined) and under g++ against kernels/simt/simt_cpu.h.
// No #include: NVRTC has no system headers. Kernels are f32 (`_f32`) or bf16 tensor-core (`_bf16`); bf16
// values are carried as raw 16-bit patterns (`bf16_t`), so no cuda_bf16.h is needed.
//
// Dimension glossary (every shape comment uses it): B images in a forward group, V views (crops) per set,
// S sets, n cells per set, N = 1 + P tokens, P patches, C embed dim, NH heads, HS = C/NH, F MLP hidden,
// K prototypes, CH/H/W image channels and size, G2 positional grid cells, R generic rows.
//
// Conventions: outputs first, then inputs, then dims, then scalars. Parameter grads accumulate (+=),
// activation grads overwrite (=) except the residual stream (+=). Every kernel guards its index:
// `if (i >= n) return; // guard`.
#pragma once
#if defined(__CUDACC__)
  #define SIMT_GPU 1
  #define DEV __device__ __forceinline__
  // Dynamic shared memory must be spelled through this macro (no extern __shared__ on the CPU).
  #define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#else
  #ifndef SIMT_CPU_H
    #error "include simt_cpu.h before common.cuh for the CPU build"
  #endif
  #define SIMT_GPU 0
  #define DEV static inline
  #define DYNAMIC_SHARED(T, name) T* name = (T*)simt::dynamic_smem()
#endif
typedef unsigned int u32;

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
// NVRTC has no <math.h>: INFINITY is undefined there. Use the bit pattern.
#define F32_NEG_INF __int_as_float(0xff800000)
#define SQRT1_2_F 0.7071067811865476f
#define INV_SQRT_2PI_F 0.3989422804014327f

// Sum / max over the 32 lanes of a warp (all lanes must participate; result in every lane).
DEV float warp_reduce_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
DEV float warp_reduce_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); `scratch` holds 32 floats of
// __shared__ memory. Every thread gets the result. Contains __syncthreads: call it convergently.
DEV float block_reduce_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nw = blockDim.x >> 5;
  v = warp_reduce_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nw ? scratch[lane] : 0.f;
  return warp_reduce_sum(t);
}
DEV float block_reduce_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nw = blockDim.x >> 5;
  v = warp_reduce_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nw ? scratch[lane] : F32_NEG_INF;
  return warp_reduce_max(t);
}

// ---------------------------------------------------------------- bf16 and tensor-core helpers
// bf16 as raw bits: the upper half of an f32. Round to nearest even, NaN stays NaN (as cvt.rn.bf16.f32).
typedef unsigned short bf16_t;
DEV bf16_t f32_to_bf16_rn(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (bf16_t)(u >> 16);
}
DEV float bf16_to_f32(bf16_t h) { return __uint_as_float((u32)h << 16); }

// D = A(16x16, row)·B(16x8, col) + C: bf16 operands, f32 accumulate. Warp-collective, full warp.
// Fragments (PTX ISA "Matrix Fragments for mma.m16n8k16"): groupID g = lane/4, t = lane%4;
// a[0..3] = A(g, 2t..), A(g+8, 2t..), A(g, 2t+8..), A(g+8, 2t+8..); b[0..1] = B(2t.., g), B(2t+8.., g);
// c[0..3] = C(g, 2t), C(g, 2t+1), C(g+8, 2t), C(g+8, 2t+1).
DEV void mma_bf16_16816(float d[4], const u32 a[4], const u32 b[2]) {
#if defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif !SIMT_GPU
  simt::mma_m16n8k16_bf16_f32(d, a, b, d);
#endif
}
// ldmatrix.m8n8.x4 (.trans): lane l gives the shared address of row l%8 of matrix l/8.
DEV void ldmatrix_x4(u32 r[4], const void* smem_row) {
#if defined(__CUDA_ARCH__)
  const u32 a = (u32)__cvta_generic_to_shared(smem_row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#elif !SIMT_GPU
  simt::ldmatrix_x4(r, smem_row);
#endif
}
DEV void ldmatrix_x4_trans(u32 r[4], const void* smem_row) {
#if defined(__CUDA_ARCH__)
  const u32 a = (u32)__cvta_generic_to_shared(smem_row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#elif !SIMT_GPU
  simt::ldmatrix_x4_trans(r, smem_row);
#endif
}
// cp.async.cg 16 bytes global → shared; src_bytes < 16 zero-fills the rest (0: reads nothing). Issue it
// convergently (the emulator treats it as a warp collective to count sectors).
DEV void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
#if defined(__CUDA_ARCH__)
  const u32 d = (u32)__cvta_generic_to_shared(smem_dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(gmem_src), "r"(src_bytes));
#elif !SIMT_GPU
  simt::cp_async_16(smem_dst, gmem_src, (unsigned)src_bytes);
#endif
}
DEV void cp_async_commit() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::);
#elif !SIMT_GPU
  simt::cp_async_commit();
#endif
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N> DEV void cp_async_wait() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#elif !SIMT_GPU
  simt::cp_async_wait(N);
#endif
}
