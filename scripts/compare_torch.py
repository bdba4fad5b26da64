#!/usr/bin/env python3
"""setdino against PyTorch on this CPU, side by side in one sitting, alternating: the ratio table.

For each workload the two engines run in turn, ROUNDS times (setdino, torch, setdino, torch, ...), each
run a fresh process with its own warm-up, so that a slow minute of the machine hits both; the table
shows the median of each engine's runs and the ratio setdino / torch (> 1: setdino is faster).

Workloads (items/s):
  vit-s 96²    ViT-S/16 forward+backward, 4 channels, 96², batch 32   (timm VisionTransformer)
  vit-s 48²    the same at 48²
  tiny 32²     the demo's model (dim 96, depth 4, 3 heads, patch 8, 32², MLP 384) forward+backward, batch 32
  step         the Set-DINO reference step, 1 set of 16 cells, 2×96² + 8×48² crops, K = 2048
               (torch: ../shared/tools/torch_vit_bench.py dino; setdino: setdino bench --what step)

    python3 scripts/compare_torch.py [--bin target/release/setdino] [--threads 2] [--rounds 3]
                                     [--only vit-s96,vit-s48,tiny,step] [--torch-isa avx2] [--json out.json]

--torch-isa avx2 holds PyTorch to AVX2 on an AVX-512 machine (ATEN_CPU_CAPABILITY, DNNL_MAX_CPU_ISA,
MKL_ENABLE_INSTRUCTIONS), as on the 2-core AVX2 machines CI runs on; setdino's GEMMs are AVX2 either way.

Needs torch and timm (pip install torch timm). Prints the machine (CPU model, SIMD, cores) first.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TORCH_BENCH = os.path.join(ROOT, "..", "shared", "tools", "torch_vit_bench.py")

VIT = {
    "vit-s96": dict(img=96, patch=16, dim=384, depth=12, heads=6, mlp=4.0, setdino=("vits16", "vit", 0)),
    "vit-s48": dict(img=48, patch=16, dim=384, depth=12, heads=6, mlp=4.0, setdino=("vits16", "vit", 1)),
    "tiny": dict(img=32, patch=8, dim=96, depth=4, heads=3, mlp=4.0, setdino=("tiny", "vit", 0)),
}

TORCH_VIT_WORKER = r"""
import sys, time, statistics, json, torch, timm
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"]); torch.manual_seed(0)
m = timm.models.vision_transformer.VisionTransformer(
    img_size=cfg["img"], patch_size=cfg["patch"], in_chans=4, embed_dim=cfg["dim"], depth=cfg["depth"],
    num_heads=cfg["heads"], mlp_ratio=cfg["mlp"], num_classes=0, class_token=True, global_pool="token")
x = torch.randn(cfg["batch"], 4, cfg["img"], cfg["img"])
times = []
for it in range(cfg["warmup"] + cfg["repeats"]):
    t0 = time.perf_counter()
    m.zero_grad(set_to_none=True)
    m(x).sum().backward()
    if it >= cfg["warmup"]:
        times.append(time.perf_counter() - t0)
print(json.dumps({"items_per_s": cfg["batch"] / statistics.median(times)}))
"""


def machine():
    model = "?"
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = "AVX-512" if "avx512f" in flags else ("AVX2+FMA" if {"avx2", "fma"} <= flags else "SSE")
    return f"{model}, {simd}, {os.cpu_count()} cores, {platform.system()}"


def run_setdino(args, name):
    if name == "step":
        cmd = [args.bin, "bench", "--backend", "cpu", "--what", "step", "--threads", str(args.threads),
               "--warmup", "1", "--repeats", str(args.repeats)]
    else:
        preset, what, row = VIT[name]["setdino"]
        cmd = [args.bin, "bench", "--backend", "cpu", "--what", what, "--config", preset, "--batch", "32",
               "--threads", str(args.threads), "--warmup", "1", "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rates = [float(m.group(1)) for m in re.finditer(r"\s([0-9.]+) items/s", out)]
    return rates[0] if name == "step" else rates[VIT[name]["setdino"][2]]


def torch_env(args):
    env = dict(os.environ)
    if args.torch_isa == "avx2":
        env.update(ATEN_CPU_CAPABILITY="avx2", DNNL_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
    return env


def run_torch(args, name):
    if name == "step":
        cmd = [sys.executable, TORCH_BENCH, "dino", "--threads", str(args.threads), "--n-cells", "16",
               "--K", "2048", "--dino-batch", "16", "--warmup", "1", "--repeats", str(args.repeats),
               "--no-probe"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=torch_env(args)).stdout
        m = re.search(r"ms/step \(median\), ([0-9.]+) img/s", out)
        if not m:
            raise RuntimeError(f"no rate in torch_vit_bench output:\n{out}")
        return float(m.group(1))
    c = dict(VIT[name], threads=args.threads, batch=32, warmup=1, repeats=args.repeats)
    c.pop("setdino")
    out = subprocess.run([sys.executable, "-c", TORCH_VIT_WORKER, json.dumps(c)], capture_output=True,
                         text=True, check=True, env=torch_env(args)).stdout
    return json.loads(out.strip().splitlines()[-1])["items_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "setdino"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per engine and workload")
    ap.add_argument("--repeats", type=int, default=5, help="timed iterations inside each run")
    ap.add_argument("--only", default="vit-s96,vit-s48,tiny,step")
    ap.add_argument("--torch-isa", choices=["native", "avx2"], default="native",
                    help="avx2: hold PyTorch to AVX2 (as on CI's machines)")
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"machine: {machine()}; {args.threads} threads; {args.rounds} alternating rounds; "
          f"PyTorch ISA: {args.torch_isa}")
    rows = []
    for name in args.only.split(","):
        s, t = [], []
        for _ in range(args.rounds):
            s.append(run_setdino(args, name))
            t.append(run_torch(args, name))
        ms, mt = statistics.median(s), statistics.median(t)
        rows.append(dict(workload=name, setdino=ms, torch=mt, ratio=ms / mt, setdino_runs=s, torch_runs=t))
        print(f"  {name:<8} setdino {ms:8.2f}/s  torch {mt:8.2f}/s  ratio {ms / mt:5.2f}   "
              f"(runs: setdino {', '.join(f'{x:.2f}' for x in s)}; torch {', '.join(f'{x:.2f}' for x in t)})",
              flush=True)
    print("\n| workload | setdino items/s | PyTorch items/s | ratio |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['setdino']:.2f} | {r['torch']:.2f} | {r['ratio']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine(), threads=args.threads, time=time.ctime(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
