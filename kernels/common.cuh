// common.cuh: prepended to every kernel module (NVRTC) and included once before all kernels (SIMT build).
// One kernel text compiles under NVRTC (__CUDACC__ defined) and under g++ against kernels/simt/simt_cpu.h.
// No #include: NVRTC has no system headers. All kernels are f32 (the bf16 tensor-core GEMM comes later).
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
