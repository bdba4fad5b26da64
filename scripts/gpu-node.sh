#!/usr/bin/env bash
# One prepared GPU measurement: build, `setdino check` (f32 and bf16), the emulator-free parity self-test,
# and the benches at both precisions, every result as JSON or text under $OUT (default ./gpu-out).
# Usage on a machine with an NVIDIA GPU and network-free pip wheels in .cuda-tools/:
#   OUT=/tmp/out scripts/gpu-node.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.cuda-tools/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{ nvidia-smi || true; } > "$OUT/nvidia-smi.txt" 2>&1
cargo build --release > "$OUT/build.txt" 2>&1 || { echo "build failed"; tail -50 "$OUT/build.txt"; exit 1; }
B=./target/release/setdino
for p in f32 bf16; do
  timeout 300 $B check --backend cuda --precision $p > "$OUT/check-$p.txt" 2>&1; echo "check $p: exit $?"
  timeout 300 $B bench --backend cuda --precision $p --what all --config vits16 --json "$OUT/bench-vits16-$p.json" \
    > "$OUT/bench-vits16-$p.txt" 2>&1; echo "bench vits16 $p: exit $?"
  timeout 120 $B bench --backend cuda --precision $p --what all --config tiny --json "$OUT/bench-tiny-$p.json" \
    > "$OUT/bench-tiny-$p.txt" 2>&1; echo "bench tiny $p: exit $?"
done
tail -n 3 "$OUT"/*.txt
