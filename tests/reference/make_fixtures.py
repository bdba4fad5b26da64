#!/usr/bin/env python3
"""Write the PyTorch-parity fixtures tests/fixtures/step_tiny{,_n1}/ (float64 throughout).

    python3 tests/reference/make_fixtures.py [--out-root tests/fixtures] [--no-f32-check]

Each fixture directory holds
  checkpoint.safetensors  student.*, teacher.*, dino_loss.center before the step (f64)
  inputs.safetensors      global [2, R, C, H, W], local [L, R, C, h, w] (absent when L = 0) (f64)
  hyper.json              step hyper-parameters
  expected.safetensors    loss [1], student_out [(2+L)S, K], teacher_out [2S, K],
                          grad.<name>                 raw loss gradient of every trainable student tensor
                          after.<name>                every student.* / teacher.* tensor after the step
                          after.dino_loss.center
                          after.optim.exp_avg.<name>, after.optim.exp_avg_sq.<name>
                                                      AdamW moments of every student tensor that was
                                                      stepped (weight_v has none when frozen)
<name> is the full state-dict name, e.g. student.backbone.blocks.0.attn.qkv.weight.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import setdino_torch as sd  # noqa: E402

# Hyper-parameter choices:
# * clip_grad 3.0 (the reference value) clips some tensors and not others with this state (the script
#   prints which).
# * eps 1e-4 instead of AdamW's default 1e-8.  The key part of every attn.qkv.bias gradient is exactly
#   zero in exact arithmetic (softmax over keys is invariant to a shift shared by all keys), so an
#   implementation sees only rounding noise there: ~1e-17 in f64, ~1e-9..1e-7 in f32.  With eps 1e-8 the
#   first Adam step maps that noise to updates of up to ~lr, i.e. an f32 engine cannot match after.* of
#   qkv.bias to 1e-4 (a float32 replay of this very script is off by 3.5e-3).  With eps 1e-4 the float32
#   replay stays within ~1e-5 of the float64 expectation on every tensor.
FIXTURES = {
    "step_tiny": dict(
        cfg=sd.Config(in_chans=3, patch_size=8, embed_dim=24, depth=2, num_heads=2, mlp_ratio=4.0,
                      head_hidden=40, bottleneck=16, out_dim=48, set_size=3, n_local=2),
        n_sets=2, global_size=24, local_size=16, seed=20240607,
        hyper=dict(student_temp=0.1, teacher_temp=0.04, center_momentum=0.9, lr=1e-3,
                   weight_decay=0.04, ema_momentum=0.99, clip_grad=3.0, freeze_last_layer=False,
                   betas=[0.9, 0.999], eps=1e-4),
    ),
    "step_tiny_n1": dict(
        cfg=sd.Config(in_chans=2, patch_size=16, embed_dim=8, depth=1, num_heads=2, mlp_ratio=4.0,
                      head_hidden=16, bottleneck=8, out_dim=16, set_size=1, n_local=0),
        n_sets=3, global_size=32, local_size=None, seed=1234,
        hyper=dict(student_temp=0.1, teacher_temp=0.04, center_momentum=0.9, lr=1e-3,
                   weight_decay=0.04, ema_momentum=0.99, clip_grad=3.0, freeze_last_layer=True,
                   betas=[0.9, 0.999], eps=1e-4),
    ),
}


def randomize_(model: sd.SetDINO, gen: torch.Generator):
    """A non-trivial state: LN weights ~1, all biases random, teacher = student + small noise."""
    def randn(shape):
        return torch.randn(shape, generator=gen)

    def uniform(shape, bound):
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound

    with torch.no_grad():
        for name, p in model.student.named_parameters():
            is_ln = ".norm" in name or name.startswith("backbone.norm")
            if name.endswith("weight_g"):
                p.fill_(1.0)
            elif is_ln and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * randn(p.shape))
            elif name.endswith(".bias"):
                p.copy_(0.1 * randn(p.shape))
            elif name in ("backbone.cls_token", "backbone.pos_embed"):
                p.copy_(0.3 * randn(p.shape))
            elif name == "backbone.patch_embed.proj.weight":
                fan_in = p[0].numel()
                p.copy_(uniform(p.shape, fan_in ** -0.5))
            elif name.endswith("weight_v"):
                p.copy_(uniform(p.shape, p.shape[1] ** -0.5))
            else:  # Linear weights
                p.copy_(randn(p.shape) * p.shape[1] ** -0.5)
        for (name, ps), pt in zip(model.student.named_parameters(), model.teacher.parameters()):
            if name.endswith("weight_g"):
                pt.fill_(1.0)  # g is fixed at 1 in both networks
            else:
                pt.copy_(ps + 0.05 * ps.std() * randn(ps.shape))
        model.dino_loss.center = 0.05 * randn(model.dino_loss.center.shape)


def build(spec, dtype):
    torch.set_default_dtype(dtype)
    cfg = spec["cfg"]
    gen = torch.Generator().manual_seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    model = sd.SetDINO(cfg)
    randomize_(model, gen)
    R = spec["n_sets"] * cfg.set_size
    C, G = cfg.in_chans, spec["global_size"]
    inputs = {"global": torch.randn((2, R, C, G, G), generator=gen)}
    if cfg.n_local:
        g = spec["local_size"]
        inputs["local"] = torch.randn((cfg.n_local, R, C, g, g), generator=gen)
    return model, inputs


def run_step(model, inputs, hyper):
    opt = sd.make_optimizer(model, hyper["lr"], hyper["weight_decay"], tuple(hyper["betas"]), hyper["eps"])
    crops = sd.crops_from_inputs(inputs["global"], inputs.get("local"))
    res = sd.train_step(model, opt, crops, teacher_temp=hyper["teacher_temp"],
                        student_temp=hyper["student_temp"], clip_grad=hyper["clip_grad"],
                        freeze_last_layer=hyper["freeze_last_layer"], ema_momentum=hyper["ema_momentum"])
    expected = {"loss": res["loss"].reshape(1), "student_out": res["student_out"],
                "teacher_out": res["teacher_out"]}
    for name, g in res["grads"].items():
        expected["grad." + name] = g
    for name, t in model.state_dict().items():
        expected["after." + name] = t.detach().clone()
    pname = {p: "student." + n for n, p in model.student.named_parameters()}
    for p, st in opt.state.items():
        expected["after.optim.exp_avg." + pname[p]] = st["exp_avg"].detach().clone()
        expected["after.optim.exp_avg_sq." + pname[p]] = st["exp_avg_sq"].detach().clone()
    return expected, res["clip"]


def rel_err(a, b):
    a, b = a.double(), b.double()
    den = b.abs().max().item()
    num = (a - b).abs().max().item()
    return num / den if den > 0 else num


def f32_replay(spec, ckpt, inputs, expected):
    """Replay the step in float32 from the f64 checkpoint; the worst relative errors show how much
    headroom an f32 engine has against the 1e-4 tolerance."""
    torch.set_default_dtype(torch.float32)
    model = sd.SetDINO(spec["cfg"])
    model.load_state({k: v.float() for k, v in ckpt.items()})
    exp32, _ = run_step(model, {k: v.float() for k, v in inputs.items()}, spec["hyper"])
    errs = sorted(((rel_err(exp32[k], v), k) for k, v in expected.items()), reverse=True)
    return errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
    ap.add_argument("--no-f32-check", action="store_true")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)

    for fname, spec in FIXTURES.items():
        model, inputs = build(spec, torch.float64)
        ckpt = model.export_state()
        hyper = dict(num_heads=spec["cfg"].num_heads, mlp_ratio=spec["cfg"].mlp_ratio,
                     set_size=spec["cfg"].set_size, **spec["hyper"])
        expected, clip = run_step(model, inputs, spec["hyper"])

        for k, v in list(ckpt.items()) + list(inputs.items()) + list(expected.items()):
            assert v.dtype == torch.float64, k
            assert torch.isfinite(v).all(), k

        out = os.path.normpath(os.path.join(args.out_root, fname))
        os.makedirs(out, exist_ok=True)
        # a single metadata key: safetensors writes metadata from a hash map, so several keys would make
        # the bytes differ from run to run
        meta = {"generator": f"tests/reference/make_fixtures.py, torch {torch.__version__}, float64"}
        save_file({k: v.contiguous() for k, v in ckpt.items()}, os.path.join(out, "checkpoint.safetensors"), meta)
        save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(out, "inputs.safetensors"), meta)
        save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"), meta)
        with open(os.path.join(out, "hyper.json"), "w") as f:
            json.dump(hyper, f, indent=2)
            f.write("\n")
        for f in os.listdir(out):
            os.chmod(os.path.join(out, f), 0o644)  # safetensors writes 0600

        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(f"== {fname}: {out}  ({size / 1024:.0f} KiB), loss = {expected['loss'].item():.10f}")
        print(f"   clip_grad = {spec['hyper']['clip_grad']}: per-tensor raw grad norms")
        for name, (norm, clipped) in clip.items():
            print(f"     {'CLIPPED' if clipped else '       '} {norm:12.6g}  student.{name}")
        n_clip = sum(c for _, c in clip.values())
        print(f"   {n_clip} of {len(clip)} tensors clipped")
        if not args.no_f32_check:
            errs = f32_replay(spec, ckpt, inputs, expected)
            print("   float32 replay vs float64 expected, worst relative errors (max|a-b|/max|b|):")
            for e, k in errs[:8]:
                print(f"     {e:10.3e}  {k}")
            torch.set_default_dtype(torch.float64)


if __name__ == "__main__":
    main()
