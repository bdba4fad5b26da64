#!/usr/bin/env python3
"""Sanity checks of setdino_torch.py itself (float64):

1. bicubic pos-embed interpolation weights == the tables of algorithm.md §1.3 (96 -> 6x6, 48 -> 3x3,
   patch 16, 14x14 grid), rows sum to 1, and the identity branch at 224;
2. WeightNormLinear == torch's own weight_norm (forward and gradient of v);
3. loss gradient by central finite differences on a few coordinates of several tensors;
4. closed-form student-logit gradient of §3;
5. if the fixtures exist: the AdamW / EMA / center formulas of §4 recomputed by hand from
   checkpoint + grad.* + hyper.json reproduce expected after.*.

    python3 tests/reference/self_check.py
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import setdino_torch as sd  # noqa: E402

torch.set_default_dtype(torch.float64)
FAIL = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        FAIL.append(msg)


def interp_matrix(grid, out_patches, patch):
    """Row weights W[i, a] of the separable bicubic map used by interpolate_pos_encoding."""
    vit = sd.VisionTransformer(img_size=grid * patch, patch_size=patch, in_chans=1, embed_dim=grid * grid,
                               depth=0, num_heads=1)
    with torch.no_grad():
        vit.pos_embed.zero_()
        vit.pos_embed[0, 1:, :] = torch.eye(grid * grid)  # channel c = one-hot grid cell c
    x = torch.zeros(1, out_patches * out_patches + 1, grid * grid)
    pe = vit.interpolate_pos_encoding(x, out_patches * patch, out_patches * patch)[0, 1:]  # [out*out, grid*grid]
    pe = pe.reshape(out_patches, out_patches, grid, grid)
    # out[i,j] = sum_ab Wv[i,a] Wh[j,b] P[a,b]; sum over b and j=0 gives Wv[i,a] * sum_b Wh[0,b] = Wv[i,a]
    Wv = pe[:, 0].sum(-1)
    Wh = pe[0, :].sum(-2)
    sep = torch.einsum("ia,jb->ijab", Wv, Wh)
    return Wv, Wh, (sep - pe).abs().max().item()


TABLE_96 = [
    {0: 0.335622, 1: 0.775220, 2: -0.110842},
    {1: -0.002327, 2: 0.047735, 3: 0.992829, 4: -0.038236},
    {4: -0.103597, 5: 0.889656, 6: 0.246245, 7: -0.032304},
    {6: -0.087226, 7: 0.550358, 8: 0.636336, 9: -0.099468},
    {8: -0.018397, 9: 0.167167, 10: 0.939710, 11: -0.088480},
    {11: -0.070932, 12: 0.968310, 13: 0.102621},
]
TABLE_48 = [
    {0: -0.033279, 1: 0.251549, 2: 0.886003, 3: -0.104273},
    {5: -0.108333, 6: 0.856608, 7: 0.292650, 8: -0.040926},
    {9: -0.026060, 10: 0.211682, 11: 0.912603, 12: -0.098225},
]


def check_bicubic():
    for size, table in ((96, TABLE_96), (48, TABLE_48)):
        Wv, Wh, sep_err = interp_matrix(14, size // 16, 16)
        T = torch.zeros_like(Wv)
        for i, row in enumerate(table):
            for a, w in row.items():
                T[i, a] = w
        err = (Wv - T).abs().max().item()
        check(err < 1e-6 and (Wv - Wh).abs().max().item() == 0 and sep_err < 1e-12,
              f"bicubic {size}->{size // 16}x{size // 16}: max |W - table| = {err:.2e}, separable err {sep_err:.1e}")
        check((Wv.sum(1) - 1).abs().max().item() < 1e-12, f"bicubic {size}: rows sum to 1")
    # identity branch
    vit = sd.VisionTransformer(img_size=224, patch_size=16, in_chans=1, embed_dim=4, depth=0, num_heads=1)
    x = torch.zeros(1, 197, 4)
    check(vit.interpolate_pos_encoding(x, 224, 224) is vit.pos_embed, "identity branch at 224 with patch 16")


def check_weight_norm():
    torch.manual_seed(0)
    ours = sd.WeightNormLinear(7, 5)
    with torch.no_grad():
        ours.weight_g.fill_(1.0)
    lin = torch.nn.Linear(7, 5, bias=False)
    with torch.no_grad():
        lin.weight.copy_(ours.weight_v)
    ref = torch.nn.utils.parametrizations.weight_norm(lin, dim=0)
    with torch.no_grad():
        ref.parametrizations.weight.original0.fill_(1.0)
    x = torch.randn(3, 7)
    y1, y2 = ours(x), ref(x)
    (y1 * torch.arange(5.0)).sum().backward()
    (y2 * torch.arange(5.0)).sum().backward()
    err_f = (y1 - y2).abs().max().item()
    err_b = (ours.weight_v.grad - ref.parametrizations.weight.original1.grad).abs().max().item()
    check(err_f < 1e-14 and err_b < 1e-14, f"weight norm vs torch parametrization: fwd {err_f:.1e}, dV {err_b:.1e}")
    check(tuple(ours.weight_g.shape) == (5, 1) and not sd.DINOHead(4, 5, 6, 7).last_layer.weight_g.requires_grad,
          "weight_g shape [K,1], requires_grad False")


def tiny_model(set_size=3, n_local=2, seed=0):
    cfg = sd.Config(in_chans=3, patch_size=8, embed_dim=12, depth=2, num_heads=3, mlp_ratio=2.0, head_hidden=10,
                    bottleneck=6, out_dim=9, set_size=set_size, n_local=n_local)
    torch.manual_seed(seed)
    m = sd.SetDINO(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(m.student.parameters()) + list(m.teacher.parameters()):
            if p.shape[-1] == 1 and p.ndim == 2:
                continue  # weight_g
            p.add_(0.2 * torch.randn(p.shape, generator=g))
        m.dino_loss.center = 0.1 * torch.randn(1, 9, generator=g)
    S = 2
    R = S * set_size
    crops = [torch.randn(R, 3, 24, 24, generator=g) for _ in range(2)]
    crops += [torch.randn(R, 3, 16, 16, generator=g) for _ in range(n_local)]
    return m, crops


def check_finite_differences():
    for set_size, n_local in ((3, 2), (1, 0)):
        m, crops = tiny_model(set_size, n_local)
        T = 0.04

        def f():
            with torch.no_grad():
                return sd.forward_loss(m, crops, T)[0].item()

        loss, _, _ = sd.forward_loss(m, crops, T)
        loss.backward()
        params = dict(m.student.named_parameters())
        # pos_embed: pick grid cells that actually receive weight (28x28 grid -> 3x3 / 2x2 tokens)
        picks = [("backbone.cls_token", (0, 0, 3)), ("backbone.pos_embed", (0, 0, 1)),
                 ("backbone.pos_embed", (0, 1 + 28 * 2 + 3, 5)), ("backbone.pos_embed", (0, 1 + 28 * 5 + 6, 2)), ("backbone.pos_embed", (0, 1 + 28 * 12 + 13, 0)),
                 ("backbone.patch_embed.proj.weight", (4, 1, 2, 7)), ("backbone.patch_embed.proj.bias", (5,)),
                 ("backbone.blocks.0.attn.qkv.weight", (13, 4)), ("backbone.blocks.0.attn.qkv.weight", (30, 2)),
                 ("backbone.blocks.1.attn.qkv.bias", (2,)), ("backbone.blocks.1.attn.proj.weight", (3, 8)),
                 ("backbone.blocks.0.norm1.weight", (7,)), ("backbone.blocks.1.norm2.bias", (1,)),
                 ("backbone.blocks.1.mlp.fc1.weight", (20, 5)), ("backbone.blocks.0.mlp.fc2.bias", (11,)),
                 ("backbone.norm.weight", (2,)), ("head.mlp.0.weight", (3, 4)), ("head.mlp.2.bias", (9,)),
                 ("head.mlp.4.weight", (5, 1)), ("head.last_layer.weight_v", (8, 3))]
        worst = 0.0
        for name, idx in picks:
            p = params[name]
            h = 1e-5
            with torch.no_grad():
                p[idx] += h
                lp = f()
                p[idx] -= 2 * h
                lm = f()
                p[idx] += h
            fd = (lp - lm) / (2 * h)
            an = p.grad[idx].item()
            err = abs(fd - an) / max(abs(an), 1e-3)
            worst = max(worst, err)
            if err > 1e-6:
                print(f"     {name}{idx}: fd {fd:.10e} analytic {an:.10e}")
        check(worst < 1e-6, f"finite differences (n={set_size}, L={n_local}), {len(picks)} coords, worst rel {worst:.1e}")


def check_logit_grad():
    torch.manual_seed(1)
    S, K, L = 4, 7, 3
    ncrops = 2 + L
    loss_mod = sd.DINOLoss(K, ncrops)
    loss_mod.center = 0.1 * torch.randn(1, K)
    z = torch.randn(ncrops * S, K, requires_grad=True)
    t = torch.randn(2 * S, K)
    T = 0.04
    loss = loss_mod(z, t, T, update_center=False)
    loss.backward()
    p = F.softmax(z.detach() / 0.1, -1).chunk(ncrops)
    q = F.softmax((t - loss_mod.center) / T, -1).chunk(2)
    nterms = 2 * ncrops - 2
    ref = []
    for v in range(ncrops):
        Tv = [iq for iq in range(2) if iq != v]
        ref.append(sum(p[v] - q[iq] for iq in Tv) / (nterms * S * 0.1))
    err = (torch.cat(ref) - z.grad).abs().max().item()
    check(err < 1e-14, f"closed-form student-logit gradient (§3): {err:.1e}")


def check_fixture_formulas():
    from safetensors.torch import load_file
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
    for name in ("step_tiny", "step_tiny_n1"):
        d = os.path.join(root, name)
        if not os.path.exists(os.path.join(d, "expected.safetensors")):
            print(f"skip {name}: no fixture")
            continue
        ck = load_file(os.path.join(d, "checkpoint.safetensors"))
        ex = load_file(os.path.join(d, "expected.safetensors"))
        hp = json.load(open(os.path.join(d, "hyper.json")))
        lr, wd, (b1, b2), eps, m, clip = (hp["lr"], hp["weight_decay"], hp["betas"], hp["eps"],
                                          hp["ema_momentum"], hp["clip_grad"])
        worst = 0.0
        for k, p in ck.items():
            if not k.startswith("student."):
                continue
            if k.endswith("weight_g"):
                new = p
            elif hp["freeze_last_layer"] and "last_layer" in k:
                new = p
                assert "after.optim.exp_avg." + k not in ex
            else:
                g = ex["grad." + k]
                n = g.norm()
                c = clip / (n + 1e-6)
                if c < 1:
                    g = g * c
                decay = 0.0 if (k.endswith(".bias") or p.ndim == 1) else wd
                ea = (1 - b1) * g
                es = (1 - b2) * g * g
                new = p * (1 - lr * decay) - (lr / (1 - b1)) * ea / (es.sqrt() / math.sqrt(1 - b2) + eps)
                worst = max(worst, (ea - ex["after.optim.exp_avg." + k]).abs().max().item(),
                            (es - ex["after.optim.exp_avg_sq." + k]).abs().max().item())
            worst = max(worst, (new - ex["after." + k]).abs().max().item())
            tk = "teacher." + k[len("student."):]
            tnew = ck[tk] * m + (1 - m) * new
            worst = max(worst, (tnew - ex["after." + tk]).abs().max().item())
        t_out = ex["teacher_out"]
        center = ck["dino_loss.center"] * hp["center_momentum"] + t_out.mean(0, keepdim=True) * (1 - hp["center_momentum"])
        worst = max(worst, (center - ex["after.dino_loss.center"]).abs().max().item())
        n_after = sum(1 for k in ex if k.startswith("after.student.") or k.startswith("after.teacher."))
        check(n_after == len(ck) - 1 and worst < 1e-14,
              f"{name}: hand-written AdamW/clip/EMA/center reproduce after.* ({worst:.1e})")


if __name__ == "__main__":
    check_bicubic()
    check_weight_norm()
    check_logit_grad()
    check_finite_differences()
    check_fixture_formulas()
    print("ALL OK" if not FAIL else f"{len(FAIL)} FAILED")
    sys.exit(1 if FAIL else 0)
