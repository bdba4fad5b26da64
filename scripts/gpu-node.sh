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

# Data-parallel over NCCL (only with 2 or more GPUs): the tiny model for 20 steps in 1 process and in 2
# processes started like torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); the two
# loss curves must agree to f32 summation-order rounding. Needs the nvidia-nccl-cu12 wheel in .nccl/
# (pip install --target .nccl nvidia-nccl-cu12 where the network is reachable).
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${NGPU:-0}" -ge 2 ] && [ -f .nccl/nvidia/nccl/lib/libnccl.so.2 ]; then
  ln -sf libnccl.so.2 .nccl/nvidia/nccl/lib/libnccl.so
  export LD_LIBRARY_PATH="$PWD/.nccl/nvidia/nccl/lib:$LD_LIBRARY_PATH"
  D="$OUT/dp"; rm -rf "$D"; mkdir -p "$D"
  $B synth --out "$D/screen" > "$D/synth.txt" 2>&1
  $B ingest --tiles "$D/screen/tiles.csv" --cells "$D/screen/cells.csv" --out "$D/store" > "$D/ingest.txt" 2>&1
  T=(--store "$D/store" --quiet --set train.backend=cuda --set train.max_steps=20 --set data.sets_per_step=4)
  timeout 300 $B train "${T[@]}" --out "$D/one" > "$D/one.txt" 2>&1; echo "data-parallel, 1 process: exit $?"
  for r in 0 1; do
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29531 \
      timeout 300 $B train "${T[@]}" --out "$D/two" > "$D/two-rank$r.txt" 2>&1 &
  done
  wait; echo "data-parallel, 2 processes: logs in $D"
  python3 - "$D" > "$OUT/data-parallel.json" <<'PY'
import json, sys
d = sys.argv[1]
def losses(run):
    try:
        return [json.loads(l)["loss"] for l in open(f"{d}/{run}/log.jsonl")]
    except OSError:
        return []
a, b = losses("one"), losses("two")
gap = max((abs(x - y) / max(1.0, abs(y)) for x, y in zip(a, b)), default=None)
print(json.dumps({"steps_1_process": len(a), "steps_2_processes": len(b), "max_rel_loss_gap": gap}))
PY
  cat "$OUT/data-parallel.json"
else
  echo "data-parallel: skipped ($NGPU GPU(s); needs 2 and .nccl/)"
fi
tail -n 3 "$OUT"/*.txt
