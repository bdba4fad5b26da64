// ema.cu: the EMA teacher over the whole flat buffer (tcnn ema.h shape): teacher = m·teacher + (1 − m)·student.
// Reference: DINO main_dino.py, the momentum update under torch.no_grad().
//
// ema_update_f32(teacher, student, n, m)
//   teacher (in place), student: (n); m: (2) = (momentum, 1 − momentum) in device memory (the step's scalar
//   buffer, so a captured step replays with the new step's momentum)   launch: one thread per element, block 256
// ema_update_bf16(teacher, teacher16, student, n, m)
//   as ema_update_f32, and teacher16 (=) the bf16 copy of the updated teacher in the same pass
//   launch: one thread per element, block 256
//
// CPU twin: src/backend/cpu/optim.rs (ema_update, ema_update_bf16)   Tests: tests/parity/ema.rs

extern "C" __global__ void ema_update_f32(float* teacher, const float* student, int n, const float* m) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  teacher[i] = teacher[i] * m[0] + m[1] * student[i];
}

extern "C" __global__ void ema_update_bf16(float* teacher, bf16_t* teacher16, const float* student, int n,
                                           const float* m) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  const float t = teacher[i] * m[0] + m[1] * student[i];
  teacher[i] = t;
  teacher16[i] = f32_to_bf16_rn(t);
}
