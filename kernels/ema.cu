// ema.cu: the EMA teacher over the whole flat buffer (tcnn ema.h shape): teacher = m·teacher + (1 − m)·student.
// Reference: DINO main_dino.py, the momentum update under torch.no_grad().
//
// ema_update_f32(teacher, student, n, momentum, one_minus_momentum)
//   teacher (in place), student: (n)   launch: one thread per element, block 256
//
// CPU twin: src/backend/cpu/optim.rs (ema_update)   Tests: tests/parity/ema.rs

extern "C" __global__ void ema_update_f32(float* teacher, const float* student, int n, float momentum,
                                          float one_minus_momentum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // guard
  teacher[i] = teacher[i] * momentum + one_minus_momentum * student[i];
}
