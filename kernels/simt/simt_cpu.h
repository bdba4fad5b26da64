// simt_cpu.h -- run "portable CUDA" kernels on the CPU with real SIMT semantics.
//
// Model: every CUDA thread of a block is a user-space fiber (x86-64: 20-instruction asm
// context switch; elsewhere glibc ucontext); all fibers of one block run on ONE OS worker
// thread, cooperatively. __syncthreads / __syncwarp / __shfl_* / ballot / mma / ldmatrix
// are the only switch points, so barrier semantics are exact, and a missing __syncthreads
// produces wrong results deterministically (also run with SIMT_SCHEDULE=reverse to flip the
// interleaving). Blocks are spread over SIMT_WORKERS fresh OS threads per launch (default:
// hardware_concurrency). __shared__ is `static thread_local`: one copy per worker == one per
// running block, zeroed at launch start. Dynamic shared memory is poisoned (0xFF) per block.
// Deadlocks (divergent __syncthreads, lanes missing from a warp collective) are detected and
// returned as an error instead of hanging. Env: SIMT_WORKERS, SIMT_SCHEDULE, SIMT_STACK_KB.
//
// Restrictions (keep kernels in this style):
//   * warp collectives must be convergent and use the full mask of live lanes;
//   * `extern __shared__` is not supported: use DYNAMIC_SHARED(T, name) (prelude.cuh);
//   * no `static __shared__`, no __shared__ with constructors;
//   * inline PTX must be wrapped in a helper with a CPU branch (#if __CUDA_ARCH__).
// C++17, Linux/glibc. Header-only. Prototype: extend the intrinsic list as kernels need it.
#ifndef SIMT_CPU_H
#define SIMT_CPU_H

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <csetjmp>
#include <csignal>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

// ---------------------------------------------------------------- built-in types
struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
template <class T> static inline T __ldg(const T* p) { return *p; }

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static thread_local
#define __constant__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))  // GNU form: legal among decl-specifiers
// g++ understands __restrict__ natively.
static constexpr int warpSize = 32;

// ---------------------------------------------------------------- bf16
struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;  // keep trivial: needed for thread_local __shared__ arrays
  __nv_bfloat16(float f) {  // round-to-nearest-even, NaN stays NaN (as CUDA)
    uint32_t u; std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) { __x = (unsigned short)((u >> 16) | 0x40u); return; }
    u += 0x7fffu + ((u >> 16) & 1u);
    __x = (unsigned short)(u >> 16);
  }
  operator float() const { uint32_t u = (uint32_t)__x << 16; float f; std::memcpy(&f, &u, 4); return f; }
};
static inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 h) { return (float)h; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 h; h.__x = u; return h; }

// ---------------------------------------------------------------- math / bit intrinsics
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
// Fast-math intrinsics are emulated EXACTLY; on the GPU they are approximations: compare with tolerances.
// glibc's <math.h> already declares __expf/__logf/... as extern functions: use macros, not definitions.
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __powf(a, b) powf(a, b)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
static inline float __saturatef(float a) { return a < 0.f ? 0.f : (a > 1.f ? 1.f : a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

// ---------------------------------------------------------------- atomics (real: blocks run in parallel)
static inline float atomicAdd(float* p, float v) {
  uint32_t* q = reinterpret_cast<uint32_t*>(p);
  uint32_t old = __atomic_load_n(q, __ATOMIC_RELAXED), nw;
  do { nw = __float_as_uint(__uint_as_float(old) + v); }
  while (!__atomic_compare_exchange_n(q, &old, nw, true, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
  return __uint_as_float(old);
}
static inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline int atomicMax(int* p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
  return old;
}
static inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
static inline int atomicCAS(int* p, int cmp, int v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED); return cmp;
}
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---------------------------------------------------------------- per-thread built-ins
// All fibers of a block share one OS thread; the scheduler rewrites threadIdx on every switch.
inline thread_local uint3 threadIdx = {0, 0, 0};
inline thread_local uint3 blockIdx = {0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

// ---------------------------------------------------------------- context switch
// x86-64: 20-instruction switch (callee-saved regs + mxcsr/x87 cw), no syscalls.
// Elsewhere (or -DSIMT_USE_UCONTEXT): glibc swapcontext, ~10x slower (sigprocmask syscall per switch).
#if defined(__x86_64__) && !defined(SIMT_USE_UCONTEXT)
#define SIMT_ASM_SWITCH 1
extern "C" void simt_ctx_switch(void** save_sp, void* load_sp);
__asm__(
    ".pushsection .text.simt_ctx_switch,\"axG\",@progbits,simt_ctx_switch,comdat\n"
    ".weak simt_ctx_switch\n"
    ".type simt_ctx_switch,@function\n"
    "simt_ctx_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $16, %rsp\n  stmxcsr 8(%rsp)\n  fnstcw 12(%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr 8(%rsp)\n  fldcw 12(%rsp)\n  addq $16, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size simt_ctx_switch, .-simt_ctx_switch\n"
    ".popsection\n");
#else
#define SIMT_ASM_SWITCH 0
#endif

namespace simt {

enum FState : int { RUNNABLE = 0, WAIT_BLOCK = 1, WAIT_WARP = 2, DONE = 3 };

struct Fiber {
#if SIMT_ASM_SWITCH
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  void* stack = nullptr;
  size_t stack_bytes = 0;
  uint3 tid{0, 0, 0};
  unsigned linear = 0;
  int state = DONE;
  unsigned wait_gen = 0;
  // cp.async copies issued but not yet waited for (deferred until cp.async.wait_group, so a missing
  // wait reads stale shared memory instead of passing by luck); `committed` counts commit_group calls.
  struct PendingCopy { void* dst; unsigned char data[16]; unsigned bytes; unsigned group; };
  std::vector<PendingCopy> pending;
  unsigned committed = 0;
};

// Fiber stacks are recycled across launches (launches use fresh OS threads; stacks are not TLS).
struct StackPool {
  std::mutex mu;
  std::vector<std::pair<void*, size_t>> free_list;
  static StackPool& get() { static StackPool* p = new StackPool; return *p; }  // leaked on purpose
  std::pair<void*, size_t> take(size_t bytes) {
    { std::lock_guard<std::mutex> g(mu);
      for (size_t i = 0; i < free_list.size(); ++i)
        if (free_list[i].second == bytes) { auto r = free_list[i]; free_list[i] = free_list.back(); free_list.pop_back(); return r; } }
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { std::perror("simt_cpu: mmap fiber stack"); std::abort(); }
    mprotect(p, page, PROT_NONE);   // guard page: stack overflow -> SIGSEGV instead of silent corruption
    return {p, bytes};
  }
  void give(void* p, size_t bytes) { std::lock_guard<std::mutex> g(mu); free_list.emplace_back(p, bytes); }
};

struct MmaSlot { uint32_t a[4], b[2]; };

// Per-launch counters (summed over all blocks of one launch; read with simt_last_counters):
//   mma: warp-level mma.sync instructions; cp_async_bytes: bytes requested by cp.async (zero-fill
//   excluded); cp_async_sectors: distinct 32-byte global sectors touched per warp-wide cp.async;
//   ldmatrix_phases: 8x8 matrices loaded by ldmatrix; ldmatrix_replays: extra shared-memory wavefronts
//   (bank conflicts) over all those phases; cp_async_instr: warp-wide cp.async instructions.
struct Counters {
  std::atomic<uint64_t> mma{0}, cp_async_bytes{0}, cp_async_sectors{0}, ldmatrix_phases{0},
      ldmatrix_replays{0}, cp_async_instr{0};
};
enum { N_COUNTERS = 6 };

struct Warp {
  unsigned members = 0, arrived = 0, gen = 0;
  uint64_t xchg[2][32];
  MmaSlot mma[2][32];
};

struct Worker {                         // one per OS thread that executes blocks
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  unsigned nthreads = 0, live = 0, arrived = 0, gen = 0;
  int current = -1;
  bool dirty = false;                   // fibers abandoned mid-kernel (deadlock): must be re-created
  ucontext_t sched;
  const std::function<void()>* body = nullptr;
  std::vector<unsigned char> dyn_smem;
  std::string error;
  Counters* counters = nullptr;
#if SIMT_ASM_SWITCH
  void* sched_sp = nullptr;
#endif
  ~Worker() { for (auto& f : fibers) if (f.stack) StackPool::get().give(f.stack, f.stack_bytes); }
};

inline thread_local Worker* tl_worker = nullptr;

inline size_t env_size(const char* name, size_t dflt) {
  const char* s = std::getenv(name);
  return (s && *s) ? (size_t)std::strtoull(s, nullptr, 10) : dflt;
}

inline Fiber& cur() { return tl_worker->fibers[tl_worker->current]; }
inline unsigned lane_id() { return cur().linear & 31u; }

inline void switch_to_scheduler(Worker* w, Fiber& f) {
#if SIMT_ASM_SWITCH
  simt_ctx_switch(&f.sp, w->sched_sp);
#else
  swapcontext(&f.ctx, &w->sched);
#endif
}
inline void switch_to_fiber(Worker* w, Fiber& f) {
#if SIMT_ASM_SWITCH
  simt_ctx_switch(&w->sched_sp, f.sp);
#else
  swapcontext(&w->sched, &f.ctx);
#endif
}
inline void yield_to_scheduler() {
  Worker* w = tl_worker;
  switch_to_scheduler(w, w->fibers[w->current]);
}

// ---- barriers ----------------------------------------------------------------
inline void release_block_if_complete(Worker* w) {
  if (w->arrived > 0 && w->arrived >= w->live) { w->arrived = 0; w->gen++; }
}
inline void release_warp_if_complete(Warp& wp) {
  if (wp.arrived > 0 && wp.arrived >= wp.members) { wp.arrived = 0; wp.gen++; }
}
inline void block_barrier() {
  Worker* w = tl_worker;
  Fiber& f = cur();
  unsigned g = w->gen;
  w->arrived++;
  release_block_if_complete(w);
  if (w->gen != g) return;               // we were the last to arrive
  f.state = WAIT_BLOCK; f.wait_gen = g;
  yield_to_scheduler();
}
inline void warp_barrier() {
  Worker* w = tl_worker;
  Fiber& f = cur();
  Warp& wp = w->warps[f.linear >> 5];
  unsigned g = wp.gen;
  wp.arrived++;
  release_warp_if_complete(wp);
  if (wp.gen != g) return;
  f.state = WAIT_WARP; f.wait_gen = g;
  yield_to_scheduler();
}

// ---- warp data exchange (double-buffered by generation parity) ----------------
inline const uint64_t* warp_allgather(uint64_t v) {
  Worker* w = tl_worker;
  Warp& wp = w->warps[cur().linear >> 5];
  unsigned slot = wp.gen & 1u;
  wp.xchg[slot][lane_id()] = v;
  warp_barrier();
  return wp.xchg[slot];
}
template <class T> inline uint64_t to_u64(T v) { static_assert(sizeof(T) <= 8, "shfl payload"); uint64_t u = 0; std::memcpy(&u, &v, sizeof(T)); return u; }
template <class T> inline T from_u64(uint64_t u) { T v; std::memcpy(&v, &u, sizeof(T)); return v; }

inline unsigned live_lane_mask() {          // lanes of the current warp that exist and have not exited
  Worker* w = tl_worker;
  const unsigned base = cur().linear & ~31u;
  unsigned m = 0;
  for (unsigned i = 0; i < 32 && base + i < w->nthreads; ++i) m |= (w->fibers[base + i].state != DONE ? 1u : 0u) << i;
  return m;
}
inline void check_mask(unsigned mask, const char* what) {
  Worker* w = tl_worker;
  Warp& wp = w->warps[cur().linear >> 5];
  unsigned full = wp.members >= 32 ? 0xffffffffu : ((1u << wp.members) - 1u);
  if ((mask & full) != full) {
    std::fprintf(stderr, "simt_cpu: %s with partial mask 0x%08x is not supported (live lanes 0x%08x)\n", what, mask, full);
    std::abort();
  }
}

// ---- tensor-core emulation: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 -----
// Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"):
//   groupID = lane>>2, tig = lane%4
//   A (16x16, 4 x .b32 = a0..a7, low half first): row = groupID (+8 for a2,a3,a6,a7),
//       col = tig*2 + (i&1) (+8 for i>=4)
//   B (16x8, 2 x .b32 = b0..b3): row(k) = tig*2 + (i&1) (+8 for i>=2), col(n) = groupID
//   C/D (16x8 f32 c0..c3): row = groupID (+8 for i>=2), col = tig*2 + (i&1)
// Inverse maps used below:  A(r,k): lane=(r&7)*4+((k&7)>>1), reg=(r>>3)+2*(k>>3), half=k&1
//                           B(k,n): lane=n*4+((k&7)>>1),     reg=k>>3,            half=k&1
inline float bf16_bits_to_f32(uint32_t bits16) { return __uint_as_float(bits16 << 16); }
inline void mma_m16n8k16_bf16_f32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  Worker* w = tl_worker;
  Warp& wp = w->warps[cur().linear >> 5];
  if (wp.members != 32) { std::fprintf(stderr, "simt_cpu: mma.sync needs a full warp\n"); std::abort(); }
  const unsigned lane = lane_id(), slot = wp.gen & 1u;
  MmaSlot& mine = wp.mma[slot][lane];
  for (int i = 0; i < 4; ++i) mine.a[i] = a[i];
  mine.b[0] = b[0]; mine.b[1] = b[1];
  const float c_in[4] = {c[0], c[1], c[2], c[3]};  // d may alias c
  warp_barrier();
  const MmaSlot* S = wp.mma[slot];
  if (lane == 0 && w->counters) w->counters->mma.fetch_add(1, std::memory_order_relaxed);
  const unsigned g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) {
    const unsigned r = g + 8 * (i >> 1), n = 2 * t + (i & 1);
    float acc = 0.f;
    for (unsigned k = 0; k < 16; ++k) {
      const uint32_t ar = S[(r & 7) * 4 + ((k & 7) >> 1)].a[(r >> 3) + 2 * (k >> 3)];
      const uint32_t br = S[n * 4 + ((k & 7) >> 1)].b[k >> 3];
      const float av = bf16_bits_to_f32((k & 1) ? (ar >> 16) : (ar & 0xffffu));
      const float bv = bf16_bits_to_f32((k & 1) ? (br >> 16) : (br & 0xffffu));
      acc += av * bv;  // bf16*bf16 is exact in f32
    }
    d[i] = c_in[i] + acc;
  }
}

// ---- ldmatrix.sync.aligned.m8n8.{x4,x4.trans,x2.trans}.shared.b16 -----------------
// Lane l supplies the address of row (l%8) of matrix (l/8). Non-trans: lane receives, for matrix i,
// row l/4, elements 2*(l%4), 2*(l%4)+1 (low half first). .trans delivers the transpose.
// Bank conflicts: each 8x8 matrix is one phase of 8 rows x 16 bytes; its wavefronts are the largest
// number of distinct 4-byte words that fall into one of the 32 banks; replays = wavefronts - 1.
inline void count_ldmatrix(const uint64_t* P, unsigned nmat) {
  Worker* w = tl_worker;
  if (lane_id() != 0 || !w->counters) return;
  uint64_t replays = 0;
  for (unsigned i = 0; i < nmat; ++i) {
    uint64_t words[32][32]; unsigned nw[32] = {0};
    unsigned worst = 0;
    for (unsigned r = 0; r < 8; ++r)
      for (unsigned q = 0; q < 4; ++q) {
        const uint64_t word = (P[8 * i + r] >> 2) + q, bank = word & 31u;
        bool seen = false;
        for (unsigned j = 0; j < nw[bank]; ++j) seen |= words[bank][j] == word;
        if (!seen) { words[bank][nw[bank]++] = word; worst = std::max(worst, nw[bank]); }
      }
    replays += worst - 1;
  }
  w->counters->ldmatrix_phases.fetch_add(nmat, std::memory_order_relaxed);
  w->counters->ldmatrix_replays.fetch_add(replays, std::memory_order_relaxed);
}
inline void ldmatrix_x4(uint32_t r[4], const void* row_ptr) {
  const uint64_t* P = warp_allgather((uint64_t)(uintptr_t)row_ptr);
  const unsigned lane = lane_id();
  count_ldmatrix(P, 4);
  for (unsigned i = 0; i < 4; ++i) {
    const uint16_t* row = (const uint16_t*)(uintptr_t)P[8 * i + lane / 4];
    r[i] = (uint32_t)row[2 * (lane % 4)] | ((uint32_t)row[2 * (lane % 4) + 1] << 16);
  }
}
inline void ldmatrix_trans(uint32_t* r, unsigned nmat, const void* row_ptr) {
  const uint64_t* P = warp_allgather((uint64_t)(uintptr_t)row_ptr);
  const unsigned lane = lane_id();
  count_ldmatrix(P, nmat);
  for (unsigned i = 0; i < nmat; ++i) {
    const uint16_t* r0 = (const uint16_t*)(uintptr_t)P[8 * i + 2 * (lane % 4)];
    const uint16_t* r1 = (const uint16_t*)(uintptr_t)P[8 * i + 2 * (lane % 4) + 1];
    r[i] = (uint32_t)r0[lane / 4] | ((uint32_t)r1[lane / 4] << 16);
  }
}
inline void ldmatrix_x2_trans(uint32_t r[2], const void* row_ptr) { ldmatrix_trans(r, 2, row_ptr); }
inline void ldmatrix_x4_trans(uint32_t r[4], const void* row_ptr) { ldmatrix_trans(r, 4, row_ptr); }

// ---- cp.async.{cg,ca}.shared.global [dst], [src], 16, src_bytes; commit_group; wait_group N --------
// Warp-collective here (the kernels issue it convergently), so the sectors one warp-wide instruction
// touches can be counted. The bytes are read at issue time and land in shared memory only at the
// cp.async.wait_group that covers their group: a kernel that forgets the wait reads stale data.
// src_bytes < 16 zero-fills the rest (src_bytes = 0: nothing is read, the 16 bytes become zero).
inline void cp_async_16(void* dst, const void* src, unsigned src_bytes) {
  Worker* w = tl_worker;
  Fiber& f = cur();
  const uint64_t mine = src_bytes ? (uint64_t)(uintptr_t)src | ((uint64_t)src_bytes << 56) : 0;
  const uint64_t* all = warp_allgather(mine);
  if (lane_id() == 0 && w->counters) {
    uint64_t sectors[64]; unsigned ns = 0; uint64_t bytes = 0;
    for (unsigned l = 0; l < 32; ++l) {
      if (!all[l]) continue;
      const uint64_t a = all[l] & ((1ull << 56) - 1), nb = all[l] >> 56;
      bytes += nb;
      for (uint64_t sct = a >> 5; sct <= (a + nb - 1) >> 5; ++sct) {
        bool seen = false;
        for (unsigned j = 0; j < ns; ++j) seen |= sectors[j] == sct;
        if (!seen && ns < 64) sectors[ns++] = sct;
      }
    }
    w->counters->cp_async_instr.fetch_add(1, std::memory_order_relaxed);
    w->counters->cp_async_bytes.fetch_add(bytes, std::memory_order_relaxed);
    w->counters->cp_async_sectors.fetch_add(ns, std::memory_order_relaxed);
  }
  Fiber::PendingCopy c;
  c.dst = dst; c.bytes = src_bytes > 16 ? 16 : src_bytes; c.group = f.committed;
  std::memset(c.data, 0, 16);
  if (c.bytes) std::memcpy(c.data, src, c.bytes);
  f.pending.push_back(c);
}
inline void cp_async_commit() { cur().committed++; }
// Completes every copy except those of the newest `n` committed groups (and the uncommitted ones).
inline void cp_async_wait(unsigned n) {
  Fiber& f = cur();
  const unsigned limit = f.committed >= n ? f.committed - n : 0;  // groups < limit must be done
  size_t keep = 0;
  for (size_t i = 0; i < f.pending.size(); ++i) {
    Fiber::PendingCopy& c = f.pending[i];
    if (c.group < limit) std::memcpy(c.dst, c.data, 16);
    else f.pending[keep++] = c;
  }
  f.pending.resize(keep);
}

// ---- fiber machinery ------------------------------------------------------------
inline void fiber_main() {
  for (;;) {
    Worker* w = tl_worker;
    (*w->body)();
    Fiber& f = w->fibers[w->current];
    f.state = DONE;
    w->live--;
    Warp& wp = w->warps[f.linear >> 5];
    wp.members--;                         // exited lanes stop participating (lenient, like HW)
    release_warp_if_complete(wp);
    release_block_if_complete(w);
    switch_to_scheduler(w, f);            // park; resumed at the start of the next block
  }
}
#if SIMT_ASM_SWITCH
extern "C" inline void simt_fiber_trampoline() { fiber_main(); std::abort(); }
#endif

inline void make_fiber(Fiber& f) {
  if (!f.stack) {
    auto st = StackPool::get().take(env_size("SIMT_STACK_KB", 64) * 1024 + (size_t)sysconf(_SC_PAGESIZE));
    f.stack = st.first; f.stack_bytes = st.second;
  }
#if SIMT_ASM_SWITCH
  // Initial frame, popped by simt_ctx_switch: [pad8|mxcsr|fpucw][r15 r14 r13 r12 rbx rbp][ret=trampoline]
  uintptr_t top = ((uintptr_t)f.stack + f.stack_bytes) & ~(uintptr_t)15;
  uint64_t* sp = (uint64_t*)(top - 80);                 // 16-aligned -> rsp%16==8 at trampoline entry
  uint32_t mx; uint16_t cw;
  __asm__ volatile("stmxcsr %0\n fnstcw %1" : "=m"(mx), "=m"(cw));
  std::memset(sp, 0, 80);
  std::memcpy((char*)sp + 8, &mx, 4);
  std::memcpy((char*)sp + 12, &cw, 2);
  sp[8] = (uint64_t)(uintptr_t)&simt_fiber_trampoline;  // return address (slots 2..7 = regs, zero)
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = f.stack_bytes;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, (void (*)())fiber_main, 0);
#endif
}

// -1: follow $SIMT_SCHEDULE; 0: forward; 1: reverse; 2: warps (set by tests through simt_set_schedule).
// forward/reverse: every runnable thread runs to its next switch point, in thread order or reversed.
// warps: one warp at a time (the lowest with a runnable thread) runs until all its threads wait at a
// __syncthreads or exit, so a warp races ahead of the others as far as the barriers allow: shared
// memory read before the warps that write it got there (a missing __syncthreads) shows up.
inline std::atomic<int> schedule_override{-1};
inline void set_schedule_override(int v) { schedule_override.store(v); }
inline int schedule_order() {
  const int o = schedule_override.load();
  if (o >= 0) return o;
  const char* s = std::getenv("SIMT_SCHEDULE");
  if (s && std::strcmp(s, "reverse") == 0) return 1;
  if (s && std::strcmp(s, "warps") == 0) return 2;
  return 0;
}

// ---- out-of-bounds accesses: SIGSEGV/SIGBUS inside a kernel become a launch error ---------------
// Device buffers end against a PROT_NONE guard page (src/backend/gpu/simt.rs), so an overrun faults.
// While a block runs, the worker's fault handler (on its own signal stack) records the address and
// jumps back to run_block, which abandons the block's fibers like a deadlock; outside kernels the
// previously installed handler (Rust's stack-overflow reporter, or the default action) runs.
inline thread_local sigjmp_buf* tl_fault_jmp = nullptr;
inline thread_local uintptr_t tl_fault_addr = 0;
inline thread_local int tl_fault_sig = 0;
inline struct sigaction g_prev_segv, g_prev_bus;
inline void fault_handler(int sig, siginfo_t* info, void* ctx) {
  if (tl_fault_jmp) {
    tl_fault_addr = (uintptr_t)info->si_addr;
    tl_fault_sig = sig;
    sigjmp_buf* j = tl_fault_jmp;
    tl_fault_jmp = nullptr;
    siglongjmp(*j, 1);
  }
  struct sigaction* prev = sig == SIGBUS ? &g_prev_bus : &g_prev_segv;
  if (prev->sa_flags & SA_SIGINFO) { if (prev->sa_sigaction) { prev->sa_sigaction(sig, info, ctx); return; } }
  else if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) { prev->sa_handler(sig); return; }
  signal(sig, SIG_DFL);  // returning re-executes the access: the default action (core dump) follows
}
inline void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
    sigaction(SIGBUS, &sa, &g_prev_bus);
  });
}
// Each worker OS thread gets an alternate signal stack (a fault may come from a fiber's stack guard).
inline void ensure_sigaltstack() {
  static thread_local std::vector<unsigned char> alt;
  if (!alt.empty()) return;
  alt.resize(64 * 1024);
  stack_t st;
  st.ss_sp = alt.data(); st.ss_size = alt.size(); st.ss_flags = 0;
  sigaltstack(&st, nullptr);
}

// Runs one block to completion on the calling OS thread. Returns false on deadlock or a fault.
inline bool run_block(Worker& w, dim3 block) {
  const unsigned n = block.x * block.y * block.z;
  if (w.fibers.size() < n || w.dirty) {
    if (w.fibers.size() < n) w.fibers.resize(n);
    for (auto& f : w.fibers) make_fiber(f);
    w.dirty = false;
  }
  const unsigned nwarps = (n + 31) / 32;
  w.warps.assign(nwarps, Warp{});
  for (unsigned i = 0; i < nwarps; ++i) w.warps[i].members = std::min(32u, n - 32 * i);
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = w.fibers[i];
    f.linear = i;
    f.tid = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
    f.state = RUNNABLE;
    f.pending.clear();
    f.committed = 0;
  }
  w.nthreads = n; w.live = n; w.arrived = 0; w.gen = 0;
  const int rev = schedule_order();
  sigjmp_buf jb;
  if (sigsetjmp(jb, 1)) {
    const Fiber& f = w.fibers[w.current >= 0 ? w.current : 0];
    char buf[256];
    std::snprintf(buf, sizeof buf, "out-of-bounds access (signal %d) at address 0x%llx by block (%u,%u,%u) thread (%u,%u,%u)",
                  tl_fault_sig, (unsigned long long)tl_fault_addr, blockIdx.x, blockIdx.y, blockIdx.z,
                  f.tid.x, f.tid.y, f.tid.z);
    w.error = buf;
    w.dirty = true;
    return false;
  }
  tl_fault_jmp = &jb;
  auto runnable = [&](unsigned i) {
    const Fiber& f = w.fibers[i];
    if (f.state == DONE) return false;
    if (f.state == WAIT_BLOCK && f.wait_gen == w.gen) return false;
    if (f.state == WAIT_WARP && f.wait_gen == w.warps[i >> 5].gen) return false;
    return true;
  };
  while (w.live > 0) {
    bool progressed = false;
    int only_warp = -1;
    if (rev == 2)
      for (unsigned i = 0; i < n; ++i)
        if (runnable(i)) { only_warp = (int)(i >> 5); break; }
    for (unsigned j = 0; j < n; ++j) {
      const unsigned i = rev == 1 ? n - 1 - j : j;
      Fiber& f = w.fibers[i];
      if (only_warp >= 0 && (int)(i >> 5) != only_warp) continue;
      if (!runnable(i)) continue;
      f.state = RUNNABLE;
      w.current = (int)i;
      threadIdx = f.tid;
      switch_to_fiber(&w, f);
      progressed = true;
    }
    if (!progressed) {
      tl_fault_jmp = nullptr;
      unsigned nb = 0, nw = 0, nd = 0;
      for (unsigned i = 0; i < n; ++i) {
        nb += w.fibers[i].state == WAIT_BLOCK; nw += w.fibers[i].state == WAIT_WARP; nd += w.fibers[i].state == DONE;
      }
      char buf[256];
      std::snprintf(buf, sizeof buf, "deadlock in block (%u,%u,%u): %u threads at __syncthreads, %u at a warp collective, %u exited",
                    blockIdx.x, blockIdx.y, blockIdx.z, nb, nw, nd);
      w.error = buf;
      w.dirty = true;
      return false;
    }
  }
  tl_fault_jmp = nullptr;
  return true;
}

inline thread_local std::string tl_last_error;
inline const char* last_error() { return tl_last_error.c_str(); }
// Counters of the last launch made by the calling OS thread.
inline thread_local uint64_t tl_last_counters[N_COUNTERS] = {0};

// Launch `body` (a closure calling the kernel) over grid x block. Returns 0 on success.
inline int launch_closure(dim3 grid, dim3 block, size_t dyn_smem, const std::function<void()>& body) {
  const unsigned nthreads = block.x * block.y * block.z;
  const unsigned long nblocks = (unsigned long)grid.x * grid.y * grid.z;
  if (nthreads == 0 || nthreads > 1024) { tl_last_error = "invalid block size"; return 1; }
  for (auto& c : tl_last_counters) c = 0;
  if (nblocks == 0) return 0;
  unsigned nworkers = (unsigned)env_size("SIMT_WORKERS", std::max(1u, std::thread::hardware_concurrency()));
  nworkers = (unsigned)std::min<unsigned long>(std::max(1u, nworkers), nblocks);
  std::atomic<unsigned long> next{0};
  std::atomic<int> failed{0};
  Counters counters;
  std::vector<std::string> errors(nworkers);
  install_fault_handler();
  auto work = [&](unsigned wid) {
    ensure_sigaltstack();
    static thread_local Worker worker;    // persistent fiber pool per OS thread
    Worker* saved = tl_worker;
    tl_worker = &worker;
    worker.body = &body;
    worker.counters = &counters;
    worker.dyn_smem.resize(dyn_smem);
    blockDim = block; gridDim = grid;
    for (unsigned long b; !failed.load() && (b = next.fetch_add(1)) < nblocks;) {
      std::fill(worker.dyn_smem.begin(), worker.dyn_smem.end(), (unsigned char)0xff);  // poison: NaN / -1
      blockIdx = {(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y), (unsigned)(b / ((unsigned long)grid.x * grid.y))};
      if (!run_block(worker, block)) { errors[wid] = worker.error; failed = 1; }
    }
    tl_worker = saved;
  };
  // Every launch runs on fresh OS threads: static __shared__ (thread_local) starts zeroed instead of
  // holding the previous launch's data, which could otherwise mask a missing __syncthreads.
  std::vector<std::thread> pool;
  for (unsigned i = 0; i < nworkers; ++i) pool.emplace_back(work, i);
  for (auto& t : pool) t.join();
  tl_last_counters[0] = counters.mma.load();
  tl_last_counters[1] = counters.cp_async_bytes.load();
  tl_last_counters[2] = counters.cp_async_sectors.load();
  tl_last_counters[3] = counters.ldmatrix_phases.load();
  tl_last_counters[4] = counters.ldmatrix_replays.load();
  tl_last_counters[5] = counters.cp_async_instr.load();
  if (failed) {
    for (auto& e : errors) if (!e.empty()) { tl_last_error = e; break; }
    return 2;
  }
  return 0;
}

template <class K, class... Args>
inline int launch(dim3 grid, dim3 block, size_t dyn_smem, K kernel, Args... args) {
  std::function<void()> body = [=]() { kernel(args...); };
  return launch_closure(grid, block, dyn_smem, body);
}

inline void* dynamic_smem() { return tl_worker->dyn_smem.data(); }

}  // namespace simt

// ---------------------------------------------------------------- CUDA-named collectives
static inline void __syncthreads() { simt::block_barrier(); }
static inline int __syncthreads_count(int p) {  // also a handy reduction primitive
  __shared__ int cnt; if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) cnt = 0;
  simt::block_barrier(); if (p) cnt++; simt::block_barrier(); int r = cnt; simt::block_barrier(); return r;
}
static inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::check_mask(mask, "__syncwarp"); simt::warp_barrier(); }

template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  simt::check_mask(mask, "__shfl_sync");
  const unsigned lane = simt::lane_id();
  const uint64_t* all = simt::warp_allgather(simt::to_u64(v));
  const unsigned s = (lane & ~(unsigned)(width - 1)) + ((unsigned)src & (unsigned)(width - 1));
  return simt::from_u64<T>(all[s]);
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  simt::check_mask(mask, "__shfl_xor_sync");
  const unsigned lane = simt::lane_id();
  const uint64_t* all = simt::warp_allgather(simt::to_u64(v));
  unsigned s = lane ^ (unsigned)lane_mask;
  if ((s & ~(unsigned)(width - 1)) != (lane & ~(unsigned)(width - 1))) s = lane;
  return simt::from_u64<T>(all[s]);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  simt::check_mask(mask, "__shfl_down_sync");
  const unsigned lane = simt::lane_id();
  const uint64_t* all = simt::warp_allgather(simt::to_u64(v));
  const unsigned s = lane + delta;
  const bool ok = (s & ~(unsigned)(width - 1)) == (lane & ~(unsigned)(width - 1));
  return simt::from_u64<T>(all[ok ? s : lane]);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  simt::check_mask(mask, "__shfl_up_sync");
  const unsigned lane = simt::lane_id();
  const uint64_t* all = simt::warp_allgather(simt::to_u64(v));
  const bool ok = (lane & (unsigned)(width - 1)) >= delta;
  return simt::from_u64<T>(all[ok ? lane - delta : lane]);
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
  simt::check_mask(mask, "__ballot_sync");
  const uint64_t* all = simt::warp_allgather(pred ? 1u : 0u);
  unsigned r = 0;
  for (unsigned i = 0; i < 32; ++i) r |= (all[i] ? 1u : 0u) << i;
  return r & mask & simt::live_lane_mask();
}
static inline int __any_sync(unsigned mask, int p) { return __ballot_sync(mask, p) != 0; }
static inline int __all_sync(unsigned mask, int p) { return __ballot_sync(mask, p) == (mask & simt::live_lane_mask()); }
static inline unsigned __activemask() { return 0xffffffffu; }

#endif  // SIMT_CPU_H