#!/usr/bin/env bash
# The GPU-node check: on a fresh machine with an NVIDIA GPU, this repository and the pip registry, in about
# 8 minutes it builds setdino, checks the device (kernel table, parity self-test in f32 and bf16, the
# captured step against the same steps launch by launch), times every kernel of the reference Set-DINO step
# with CUDA events and the whole step (replayed from a CUDA graph, and launch by launch), and runs PyTorch's
# version of the same step (eager and torch.compile, bf16) for the side-by-side ratio. Everything lands
# under $OUT (default ./gpu-check), with one summary: $OUT/summary.json.
#
#   OUT=/tmp/out scripts/gpu-node-check.sh            # TORCH=0 skips PyTorch; BUDGET=480 is the soft limit (s)
#
# Each stage has its own timeout and the script goes on when one fails: the summary says which did what.
# Needs: cargo (rustup), python3 with pip, the NVIDIA driver. Installs into git-ignored folders only:
# .cuda-tools/ (NVRTC wheel) and .torch/ (torch + timm, when TORCH=1 and torch is not importable).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
TORCH="${TORCH:-1}"
BUDGET="${BUDGET:-480}"
mkdir -p "$OUT"
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
status=()
stage() { # stage NAME SECONDS CMD...: runs CMD with a timeout, logs to $OUT/NAME.txt, records the exit code
  local name=$1 secs=$2; shift 2
  local t=$(date +%s)
  timeout "$secs" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  status+=("\"$name\": {\"exit\": $rc, \"seconds\": $(( $(date +%s) - t ))}")
  echo "$name: exit $rc ($(( $(date +%s) - t )) s)"
  return $rc
}

{ nvidia-smi || true; } > "$OUT/nvidia-smi.txt" 2>&1
# NVRTC from pip when the machine has none on the loader path
if [ ! -e .cuda-tools/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 ] && ! ldconfig -p 2>/dev/null | grep -q libnvrtc.so.12; then
  stage pip-nvrtc 120 python3 -m pip install --quiet --target .cuda-tools nvidia-cuda-nvrtc-cu12==12.9.86
fi
export LD_LIBRARY_PATH="$PWD/.cuda-tools/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# PyTorch in the background while cargo builds (both mostly wait on the network and the compiler)
if [ "$TORCH" = 1 ] && ! python3 -c 'import torch, timm' 2>/dev/null; then
  ( python3 -m pip install --quiet --target .torch torch timm > "$OUT/pip-torch.txt" 2>&1; echo $? > "$OUT/pip-torch.rc" ) &
  TORCH_PID=$!
fi
export PYTHONPATH="$PWD/.torch${PYTHONPATH:+:$PYTHONPATH}"

stage build 300 cargo build --release || { echo "build failed:"; tail -30 "$OUT/build.txt"; }
B=./target/release/setdino
REF=(--config vits16 --sets 32 --set-size 16 --n-local 8)
if [ -x "$B" ]; then
  stage check-f32 60 $B check --backend cuda --precision f32
  stage check-bf16 60 $B check --backend cuda --precision bf16
  stage kernels-bf16 90 $B bench --backend cuda --precision bf16 --what kernels "${REF[@]}" --warmup 2 --repeats 5 \
    --json "$OUT/kernels-bf16.json"
  stage step-bf16 90 $B bench --backend cuda --precision bf16 --what step "${REF[@]}" --warmup 2 --warmup-secs 2 \
    --repeats 7 --json "$OUT/step-bf16.json"
  stage step-bf16-nograph 90 $B bench --backend cuda --precision bf16 --what step "${REF[@]}" --graphs off \
    --warmup 2 --warmup-secs 1 --repeats 5 --json "$OUT/step-bf16-nograph.json"
  stage step-f32 90 $B bench --backend cuda --precision f32 --what step "${REF[@]}" --warmup 1 --warmup-secs 1 \
    --repeats 3 --json "$OUT/step-f32.json"
  # what the model predicted for this GPU, for the measured/modelled comparison
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z' 'a-z')
  case "$GPU_NAME" in *h200*) MODEL=h200 ;; *a100*) MODEL=a100 ;; *) MODEL=h100 ;; esac
  stage kernels-model 60 $B bench --backend simt --precision bf16 --what kernels "${REF[@]}" --warmup 1 \
    --gpu "$MODEL" --json "$OUT/kernels-model.json"
fi
if [ -n "${TORCH_PID:-}" ]; then wait "$TORCH_PID"; fi
if [ "$TORCH" = 1 ] && python3 -c 'import torch, timm' 2>/dev/null; then
  TB=../shared/tools/torch_vit_bench.py
  [ -f "$TB" ] || TB=shared/tools/torch_vit_bench.py
  TA=(dino --device cuda --dtype bf16 --dino-batch 512 --n-cells 16 --global-px 96 --local-px 48 --n-local 8 --K 2048 --no-probe --repeats 5)
  stage torch-eager "$(( $(left) > 60 ? 90 : 60 ))" python3 "$TB" "${TA[@]}" --json "$OUT/torch-eager.json"
  if [ "$(left)" -gt 60 ]; then
    stage torch-compile "$(( $(left) > 150 ? 150 : $(left) ))" python3 "$TB" "${TA[@]}" --compile --json "$OUT/torch-compile.json"
  else
    echo "torch-compile: skipped (budget)"; status+=("\"torch-compile\": {\"skipped\": \"budget\"}")
  fi
else
  status+=("\"torch\": {\"skipped\": \"TORCH=0 or torch/timm not installable\"}")
fi

# one summary: the stages, the measured step and kernels, torch's samples/s and the ratios
python3 - "$OUT" "$(IFS=,; echo "${status[*]}")" > "$OUT/summary.json" <<'PY'
import json, sys, os
out, stages = sys.argv[1], json.loads("{" + sys.argv[2] + "}")
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return None
s = {"stages": stages}
k = load("kernels-bf16.json")
if k:
    s["kernels_measured"] = {"step": k["step"], "top": k["kernels"][:12]}
m = load("kernels-model.json")
if m:
    s["kernels_modelled_step"] = m["step"]
    if k:
        s["measured_over_modelled_step_ms"] = k["step"]["ms"] / m["step"]["ms"]
for p in ("bf16", "bf16-nograph", "f32"):
    st = load(f"step-{p}.json")
    if st and st.get("results"):
        r = st["results"][0]
        s[f"setdino_step_{p}"] = {k2: r.get(k2) for k2 in ("name", "backend", "items_per_s", "median_s", "gflops", "per_step", "per_step_uncaptured", "arena_bytes", "allocated_bytes")}
g, ng = s.get("setdino_step_bf16", {}).get("median_s"), s.get("setdino_step_bf16-nograph", {}).get("median_s")
if g and ng:
    s["graph_speedup_step_bf16"] = ng / g
def torch_rate(doc):
    # torch_vit_bench.py's JSON: the first result with a samples-per-second figure
    found = []
    def walk(x):
        if isinstance(x, dict):
            for key, v in x.items():
                if key in ("samples_per_s", "items_per_s", "imgs_per_s", "img_per_s") and isinstance(v, (int, float)):
                    found.append(v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(doc)
    return found[0] if found else None
for mode in ("eager", "compile"):
    t = load(f"torch-{mode}.json")
    if t:
        s[f"torch_{mode}_samples_per_s"] = torch_rate(t)
ours = s.get("setdino_step_bf16", {}).get("items_per_s")
for mode in ("eager", "compile"):
    theirs = s.get(f"torch_{mode}_samples_per_s")
    if ours and theirs:
        s[f"ratio_vs_torch_{mode}"] = ours / theirs
print(json.dumps(s, indent=1))
PY
echo "summary: $OUT/summary.json ($(( $(date +%s) - T0 )) s in all)"
grep -E '"ratio|samples_per_s"|mfu_pct|"ms"' "$OUT/summary.json" | head -20
