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
  tiny-step    the demo's DINO training step (cells/s): the tiny model, 32 cells × (2×48² + 4×24²),
               per-crop head 96→256→256→64, K = 256, drop path 0.1, teacher forward, DINO loss with
               centering, AdamW, EMA (torch: the same step in plain torch, written below the way
               torch_vit_bench.py writes the reference step; setdino: setdino bench --what step
               --config tiny --sets 32 --set-size 1 --n-local 4 --global-px 48 --local-px 24)

    python3 scripts/compare_torch.py [--bin target/release/setdino] [--threads 2] [--rounds 3]
                                     [--only vit-s96,vit-s48,tiny,step,tiny-step] [--torch-isa avx2] [--json out.json]

--torch-isa avx2 holds PyTorch to AVX2 on an AVX-512 machine (ATEN_CPU_CAPABILITY, DNNL_MAX_CPU_ISA,
MKL_ENABLE_INSTRUCTIONS), as on 2-core AVX2-only machines. setdino's GEMMs run at AVX-512 where the CPU
has it (the `gemm` crate's x86-v4 kernels, Cargo feature `avx512`); to hold setdino to AVX2 as well, build
it without that feature and pass that binary:

    cargo build --release --no-default-features --target-dir target/avx2
    python3 scripts/compare_torch.py --torch-isa avx2 --bin target/avx2/release/setdino

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

# The timing loop both torch workers end with (after defining step() and cfg): warm-up for at least
# cfg["warmup"] runs and cfg["warmup_secs"] seconds, as `setdino bench` does, then the timed runs.
TIME_STEP = r"""
t_warm, done = time.perf_counter(), 0
while done < cfg["warmup"] or time.perf_counter() - t_warm < cfg["warmup_secs"]:
    step(); done += 1
times = []
for it in range(cfg["repeats"]):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
"""

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
def step():
    m.zero_grad(set_to_none=True)
    m(x).sum().backward()

""" + TIME_STEP + r"""
print(json.dumps({"items_per_s": cfg["batch"] / statistics.median(times)}))
"""


# The demo's DINO step in plain torch: tiny ViT (timm, dynamic image size, drop path), DINO head
# (3-layer MLP with GELU, L2 normalisation, weight-normalised prototypes with g = 1), teacher without
# gradients on the global crops, DINO cross-entropy over every (teacher view, other student view) pair
# with centering, AdamW, center and EMA updates. Mirrors worker_dino of torch_vit_bench.py.
TINY_STEP = dict(img=48, local=24, n_local=4, batch=32, patch=8, dim=96, depth=4, heads=3, mlp=4.0,
                 hidden=256, bottleneck=64, K=256, drop_path=0.1)

TORCH_DINO_WORKER = r"""
import sys, time, statistics, json, copy, torch, timm
import torch.nn as nn, torch.nn.functional as F
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"]); torch.manual_seed(0)

class Head(nn.Module):
    def __init__(s, dim, hidden, bottleneck, K):
        super().__init__()
        s.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                              nn.Linear(hidden, bottleneck))
        s.v = nn.Parameter(torch.randn(K, bottleneck) * 0.02)
    def forward(s, x):
        return F.linear(F.normalize(s.mlp(x), dim=-1), F.normalize(s.v, dim=-1))

class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.backbone = timm.models.vision_transformer.VisionTransformer(
            img_size=cfg["img"], patch_size=cfg["patch"], in_chans=4, embed_dim=cfg["dim"],
            depth=cfg["depth"], num_heads=cfg["heads"], mlp_ratio=cfg["mlp"], num_classes=0,
            global_pool="token", dynamic_img_size=True, drop_path_rate=cfg["drop_path"])
        s.head = Head(cfg["dim"], cfg["hidden"], cfg["bottleneck"], cfg["K"])
    def forward(s, crops):
        return s.head(torch.cat([s.backbone(c) for c in crops]))

student = Net(); teacher = copy.deepcopy(student)
for p in teacher.parameters():
    p.requires_grad_(False)
opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.04)
B, nl = cfg["batch"], cfg["n_local"]
center = torch.zeros(1, cfg["K"])
g = torch.randn(2 * B, 4, cfg["img"], cfg["img"])
l = torch.randn(nl * B, 4, cfg["local"], cfg["local"])

def step():
    global center
    with torch.no_grad():
        t_out = teacher([g])
    s_out = student([g, l])
    t_soft = F.softmax((t_out - center) / 0.04, dim=-1).chunk(2)
    s_logp = F.log_softmax(s_out / 0.1, dim=-1).chunk(2 + nl)
    loss, n = 0.0, 0
    for iq, q in enumerate(t_soft):
        for v, lp in enumerate(s_logp):
            if v != iq:
                loss = loss + torch.sum(-q * lp, dim=-1).mean(); n += 1
    loss = loss / n
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        center = center * 0.9 + t_out.mean(0, keepdim=True) * 0.1
        for ps, pt in zip(student.parameters(), teacher.parameters()):
            pt.mul_(0.996).add_(ps.detach(), alpha=0.004)

""" + TIME_STEP + r"""
print(json.dumps({"items_per_s": B / statistics.median(times)}))
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
    if name == "tiny-step":
        t = TINY_STEP
        cmd = [args.bin, "bench", "--backend", "cpu", "--what", "step", "--config", "tiny",
               "--sets", str(t["batch"]), "--set-size", "1", "--n-local", str(t["n_local"]),
               "--global-px", str(t["img"]), "--local-px", str(t["local"]),
               "--threads", str(args.threads), "--warmup", "1", "--warmup-secs", str(args.warmup_secs),
               "--repeats", str(args.repeats)]
        name = "step"
    elif name == "step":
        # torch_vit_bench.py warms up by count; one reference step takes seconds on either engine
        cmd = [args.bin, "bench", "--backend", "cpu", "--what", "step", "--threads", str(args.threads),
               "--warmup", "1", "--warmup-secs", str(args.warmup_secs), "--repeats", str(args.repeats)]
    else:
        preset, what, row = VIT[name]["setdino"]
        cmd = [args.bin, "bench", "--backend", "cpu", "--what", what, "--config", preset, "--batch", "32",
               "--threads", str(args.threads), "--warmup", "1", "--warmup-secs", str(args.warmup_secs),
               "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rates = [float(m.group(1)) for m in re.finditer(r"\s([0-9.]+) items/s", out)]
    return rates[0] if name == "step" else rates[VIT[name]["setdino"][2]]


def torch_env(args):
    env = dict(os.environ)
    if args.torch_isa == "avx2":
        env.update(ATEN_CPU_CAPABILITY="avx2", DNNL_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
    return env


def run_torch(args, name):
    if name == "tiny-step":
        c = dict(TINY_STEP, threads=args.threads, warmup=1, warmup_secs=args.warmup_secs, repeats=args.repeats)
        out = subprocess.run([sys.executable, "-c", TORCH_DINO_WORKER, json.dumps(c)], capture_output=True,
                             text=True, check=True, env=torch_env(args)).stdout
        return json.loads(out.strip().splitlines()[-1])["items_per_s"]
    if name == "step":
        cmd = [sys.executable, TORCH_BENCH, "dino", "--threads", str(args.threads), "--n-cells", "16",
               "--K", "2048", "--dino-batch", "16", "--warmup", "1", "--repeats", str(args.repeats),
               "--no-probe"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=torch_env(args)).stdout
        m = re.search(r"ms/step \(median\), ([0-9.]+) img/s", out)
        if not m:
            raise RuntimeError(f"no rate in torch_vit_bench output:\n{out}")
        return float(m.group(1))
    c = dict(VIT[name], threads=args.threads, batch=32, warmup=1, warmup_secs=args.warmup_secs,
             repeats=args.repeats)
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
    ap.add_argument("--warmup-secs", type=float, default=3.0,
                    help="each run warms up for at least this long before timing (both engines): a VM's "
                         "cores reach their steady clock only after a few seconds of load")
    ap.add_argument("--only", default="vit-s96,vit-s48,tiny,step,tiny-step")
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
