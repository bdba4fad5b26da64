// dino_loss.cu: the DINO cross-entropy with centering and sharpening, fused with its gradient w.r.t. the
// student logits, and the center EMA (algorithm.md §3):
//   L = (1/T)·Σ_{iq∈{0,1}} Σ_{v≠iq} (1/S)·Σ_s −Σ_k q_iq[s,k]·log softmax(z_v[s]/τs)_k,
//   q = softmax((t − center)/τt), T = 2V − 2;  dL/dz_v[s] = (1/(T·S·τs))·Σ_{iq≠v} (p_v[s] − q_iq[s]).
// Reference: DINO main_dino.py DINOLoss.forward, update_center; DINOv2 loss/dino_clstoken_loss.py
// sinkhorn_knopp_teacher.
//
// dino_loss_forward_backward_teacher_f32(tprobs, teacher, center, R, K, teacher_temp)
//   tprobs: (R, K) = q; teacher: (R, K), R = 2S; center: (K); teacher_temp: (1) in device memory (the step's
//   scalar buffer: the temperature's warm-up replays in a captured step)   launch: one block of 256 per row
// dino_loss_forward_backward_student_f32(dstudent, row_loss, student, tprobs, V, S, K, student_temp, coef)
//   dstudent (=): (V·S, K); row_loss: (V·S) = Σ_{iq≠v} CE; student: (V·S, K) view-major; coef = 1/(T·S·τs)
//   launch: one block of 256 per student row
// dino_loss_forward_backward_sum_f32(loss, row_loss, R, scale)
//   loss: (1) = scale·Σ row_loss, rows in order   launch: one thread
// dino_loss_center_update_f32(center, teacher, R, K, momentum, one_minus_momentum)
//   center: (K) = m·center + (1 − m)·mean over R rows of teacher   launch: one thread per prototype
// dino_loss_sinkhorn_f32(tprobs, teacher, R, K, teacher_temp, iters)
//   tprobs: (R, K) = the Sinkhorn–Knopp teacher targets (DINOv2's centering, in place of the center):
//   Q = exp((t − max t)/τt) / Σ, then `iters` times: each prototype column to mass 1/K, each row to 1/R;
//   finally ×R (rows sum to 1). A column or row of zero mass stays zero. teacher_temp: (1) in device memory.   launch: one block of 256
// dino_loss_monitor_f32(stats, loss, tprobs, teacher, slot, Rp, Rt, K)
//   stats[4·slot .. 4·slot + 4] = (loss[0], mean over the Rp rows of tprobs of −Σ_k q·ln q (q > 0),
//   1 if the Rt ≥ 2 teacher rows all equal the first within 1e-6 else 0, 0): a step's monitoring values,
//   kept on the device and read every log_every steps (no host sync per step).   launch: one block of 256
//
// CPU twin: src/backend/cpu/dino_loss.rs   Tests: tests/parity/dino_loss.rs, tests/gradcheck/dino_loss.rs

extern "C" __global__ void dino_loss_forward_backward_teacher_f32(float* tprobs, const float* teacher, const float* center,
                                                         int R, int K, const float* teacher_temp) {
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  if (row >= R) return;  // guard (whole block)
  const float* t = teacher + (long long)row * K;
  float* q = tprobs + (long long)row * K;
  const float tt = *teacher_temp;
  float mx = F32_NEG_INF;
  for (int j = threadIdx.x; j < K; j += blockDim.x) {
    q[j] = (t[j] - center[j]) / tt;
    mx = fmaxf(mx, q[j]);
  }
  mx = block_reduce_max(mx, scratch);
  float s = 0.f;
  for (int j = threadIdx.x; j < K; j += blockDim.x) {
    q[j] = expf(q[j] - mx);
    s += q[j];
  }
  s = block_reduce_sum(s, scratch);
  for (int j = threadIdx.x; j < K; j += blockDim.x) q[j] /= s;
}

extern "C" __global__ void dino_loss_forward_backward_student_f32(float* dstudent, float* row_loss, const float* student,
                                                 const float* tprobs, int V, int S, int K, float student_temp,
                                                 float coef) {
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  if (row >= V * S) return;  // guard (whole block)
  const int view = row / S, s = row % S;
  const float* z = student + (long long)row * K;
  float* d = dstudent + (long long)row * K;
  // d holds z/τs first, then log-softmax, then the gradient.
  float mx = F32_NEG_INF;
  for (int j = threadIdx.x; j < K; j += blockDim.x) {
    d[j] = z[j] / student_temp;
    mx = fmaxf(mx, d[j]);
  }
  mx = block_reduce_max(mx, scratch);
  float se = 0.f;
  for (int j = threadIdx.x; j < K; j += blockDim.x) se += expf(d[j] - mx);
  const float lse = logf(block_reduce_sum(se, scratch)) + mx;
  float ce = 0.f;
  float count = 0.f;
  for (int iq = 0; iq < 2; ++iq) {
    if (iq == view) continue;
    count += 1.f;
    const float* q = tprobs + ((long long)iq * S + s) * K;
    for (int j = threadIdx.x; j < K; j += blockDim.x) ce += -q[j] * (d[j] - lse);
  }
  ce = block_reduce_sum(ce, scratch);
  for (int j = threadIdx.x; j < K; j += blockDim.x) {
    const float ls = d[j] - lse;
    float qsum = 0.f;
    for (int iq = 0; iq < 2; ++iq)
      if (iq != view) qsum += tprobs[((long long)iq * S + s) * K + j];
    d[j] = (count * expf(ls) - qsum) * coef;
  }
  if (threadIdx.x == 0) row_loss[row] = ce;
}

extern "C" __global__ void dino_loss_forward_backward_sum_f32(float* loss, const float* row_loss, int R, float scale) {
  if (blockIdx.x * blockDim.x + threadIdx.x != 0) return;  // guard: one thread
  float acc = 0.f;
  for (int r = 0; r < R; ++r) acc += row_loss[r];
  loss[0] = acc * scale;
}

extern "C" __global__ void dino_loss_center_update_f32(float* center, const float* teacher, int R, int K,
                                                       float momentum, float one_minus_momentum) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= K) return;  // guard
  float s = 0.f;
  for (int r = 0; r < R; ++r) s += teacher[(long long)r * K + j];
  center[j] = center[j] * momentum + s / (float)R * one_minus_momentum;
}

extern "C" __global__ void dino_loss_sinkhorn_f32(float* tprobs, const float* teacher, int R, int K,
                                                  const float* teacher_temp, int iters) {
  __shared__ float scratch[32];
  if (blockIdx.x != 0) return;  // one block does the whole (R, K) matrix
  const long long n = (long long)R * K;
  const float tt = *teacher_temp;
  float mx = F32_NEG_INF;
  for (long long e = threadIdx.x; e < n; e += blockDim.x) mx = fmaxf(mx, teacher[e]);
  mx = block_reduce_max(mx, scratch);
  float s = 0.f;
  for (long long e = threadIdx.x; e < n; e += blockDim.x) {
    tprobs[e] = expf((teacher[e] - mx) / tt);
    s += tprobs[e];
  }
  s = block_reduce_sum(s, scratch);
  for (long long e = threadIdx.x; e < n; e += blockDim.x) tprobs[e] /= s;
  __syncthreads();
  for (int it = 0; it < iters; ++it) {
    // Columns (prototypes): each thread owns whole columns, rows summed in order.
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
      float c = 0.f;
      for (int r = 0; r < R; ++r) c += tprobs[(long long)r * K + k];
      const float scale = c > 0.f ? 1.f / (c * (float)K) : 0.f;
      for (int r = 0; r < R; ++r) tprobs[(long long)r * K + k] *= scale;
    }
    __syncthreads();
    // Rows (samples): a block reduction per row.
    for (int r = 0; r < R; ++r) {
      float* q = tprobs + (long long)r * K;
      float t = 0.f;
      for (int k = threadIdx.x; k < K; k += blockDim.x) t += q[k];
      t = block_reduce_sum(t, scratch);
      const float scale = t > 0.f ? 1.f / (t * (float)R) : 0.f;
      for (int k = threadIdx.x; k < K; k += blockDim.x) q[k] *= scale;
    }
    __syncthreads();
  }
  for (long long e = threadIdx.x; e < n; e += blockDim.x) tprobs[e] *= (float)R;
}

extern "C" __global__ void dino_loss_monitor_f32(float* stats, const float* loss, const float* tprobs,
                                                 const float* teacher, int slot, int Rp, int Rt, int K) {
  __shared__ float scratch[32];
  if (blockIdx.x != 0) return;  // one block
  const long long np = (long long)Rp * K, nt = (long long)Rt * K;
  float h = 0.f;
  for (long long e = threadIdx.x; e < np; e += blockDim.x) {
    const float q = tprobs[e];
    if (q > 0.f) h -= q * logf(q);
  }
  h = block_reduce_sum(h, scratch);
  float differs = 0.f;
  for (long long e = K + threadIdx.x; e < nt; e += blockDim.x) {
    if (!(fabsf(teacher[e] - teacher[e % K]) <= 1e-6f)) differs = 1.f;
  }
  differs = block_reduce_max(differs, scratch);
  if (threadIdx.x == 0) {
    float* out = stats + 4LL * slot;
    out[0] = loss[0];
    out[1] = Rp > 0 ? h / (float)Rp : 0.f;
    out[2] = (Rt >= 2 && differs == 0.f) ? 1.f : 0.f;
    out[3] = 0.f;
  }
}
