// koleo.cu: the KoLeo regulariser of DINOv2 (Sablayrolles et al. 2019), −(w/N)·Σᵢ log(‖ŷᵢ − ŷ_nn(i)‖ + eps)
// over the L2-normalised student CLS tokens ŷ of each global view (G groups of R consecutive rows; a row's
// nearest neighbour, by cosine similarity, is searched in its own group). Keeps the representation from
// collapsing to one point when the DINO center sees only a few teacher rows per step.
// Reference: dinov2/loss/koleo_loss.py (KoLeoLoss), with the neighbour by the largest dot product.
//
// koleo_forward_f32(nn, dist, y, G, R, C)
//   nn: (G·R) index within the group of the most similar other row (ties: the lower index), as float;
//   dist: (G·R) ‖ŷᵢ − ŷ_nn‖₂; y: (G·R, C) unit rows   launch: one warp per row, block 256
// koleo_backward_f32(dinp, loss, nn, dist, y, norm, G, R, C, weight, eps)
//   loss (=): −(w/N)·Σ log(dist + eps) in row order (row 0's lane 0); dinp (+=): gradient with respect to
//   the un-normalised rows, norm = ‖x‖   launch: one warp per row, block 256
//
// CPU twin: src/backend/cpu/koleo.rs   Tests: tests/parity/koleo.rs, tests/gradcheck/koleo.rs

extern "C" __global__ void koleo_forward_f32(float* nn, float* dist, const float* y, int G, int R, int C) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= G * R) return;  // guard (whole warp)
  const int base = (row / R) * R;
  const float* yi = y + (long long)row * C;
  float best = F32_NEG_INF;
  int arg = row == base ? base + 1 : base;
  for (int j = base; j < base + R; ++j) {
    if (j == row) continue;
    const float* yj = y + (long long)j * C;
    float s = 0.f;
    for (int k = lane; k < C; k += 32) s += yi[k] * yj[k];
    s = warp_reduce_sum(s);  // every lane holds the same sum
    if (s > best) {
      best = s;
      arg = j;
    }
  }
  const float* yj = y + (long long)arg * C;
  float d2 = 0.f;
  for (int k = lane; k < C; k += 32) {
    const float t = yi[k] - yj[k];
    d2 += t * t;
  }
  d2 = warp_reduce_sum(d2);
  if (lane == 0) {
    nn[row] = (float)(arg - base);
    dist[row] = sqrtf(d2);
  }
}

// −(w/N) / ((d + eps)·max(d, eps)): the coefficient of (ŷᵢ − ŷ_nn(i)) in ∂loss/∂ŷᵢ.
DEV float koleo_coef(float d, float scale, float eps) {
  return -scale / ((d + eps) * fmaxf(d, eps));
}

// Component k of gₐ = cₐ(ŷₐ − ŷ_nn(a)) − Σ_{i: nn(i)=a} cᵢ(ŷᵢ − ŷₐ), i ascending.
DEV float koleo_grad_k(const float* nn, const float* dist, const float* y, int a, int base,
                                              int R, int C, int k, float scale, float eps) {
  const float ya = y[(long long)a * C + k];
  const int own = base + (int)nn[a];
  float g = koleo_coef(dist[a], scale, eps) * (ya - y[(long long)own * C + k]);
  for (int i = base; i < base + R; ++i) {
    if (i == a || base + (int)nn[i] != a) continue;
    g -= koleo_coef(dist[i], scale, eps) * (y[(long long)i * C + k] - ya);
  }
  return g;
}

extern "C" __global__ void koleo_backward_f32(float* dinp, float* loss, const float* nn, const float* dist,
                                             const float* y, const float* norm, int G, int R, int C, float weight,
                                             float eps) {
  const int lane = threadIdx.x & 31;
  const int a = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int n = G * R;
  if (a >= n) return;  // guard (whole warp)
  const float scale = weight / (float)n;
  if (a == 0 && lane == 0) {
    float acc = 0.f;
    for (int i = 0; i < n; ++i) acc += logf(dist[i] + eps);
    loss[0] = -scale * acc;
  }
  const int base = (a / R) * R;
  const float* ya = y + (long long)a * C;
  float s = 0.f;
  for (int k = lane; k < C; k += 32) s += ya[k] * koleo_grad_k(nn, dist, y, a, base, R, C, k, scale, eps);
  const float dot = warp_reduce_sum(s);
  const float den = fmaxf(norm[a], eps);
  float* dx = dinp + (long long)a * C;
  for (int k = lane; k < C; k += 32) dx[k] += (koleo_grad_k(nn, dist, y, a, base, R, C, k, scale, eps) - ya[k] * dot) / den;
}
