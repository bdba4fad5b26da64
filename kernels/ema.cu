// ema.cu: the EMA teacher over the whole flat buffer (tcnn ema.h shape): teacher = m·teacher + (1 − m)·student.
// Reference: DINO main_dino.py, the momentum update under torch.no_grad().
//
// ema_update_f32(teacher, student, n, momentum, one_minus_momentum)
//   teacher (in place), student: (n)   launch: one thread per element, block 256
// ema_update_bf16(teacher, teacher16, student, n, momentum, one_minus_momentum)
//   as ema_update_f32, and teacher16 (=) the bf16 copy of the updated teacher in the same pass
//   launch: one thread per element, block 256
//
// CPU twin: src/backend/cpu/optim.rs (ema_update, ema_update_bf16)   Tests: tests/parity/ema.rs

extern "C" __global__ void ema_update_f32(float* teacher, const float* student, int n, float momentum,
                                          float one_minus_momentum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  teacher[i] = teacher[i] * momentum + one_minus_momentum * student[i];
}

extern "C" __global__ void ema_update_bf16(float* teacher, bf16_t* teacher16, const float* student, int n,
                                           float momentum, float one_minus_momentum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  const float t = teacher[i] * momentum + one_minus_momentum * student[i];
  teacher[i] = t;
  teacher16[i] = f32_to_bf16_rn(t);
}
