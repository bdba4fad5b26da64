#!/usr/bin/env python3
"""Clean-room PyTorch reference of one Set-DINO training step.

Follows ../../../shared/spec/algorithm.md §1-4 and §6.3 (DINO's vision_transformer.py,
DINOHead with set aggregation, MultiCropWrapper, DINOLoss, the manual training step of
Set-DINO's model.py).  Written from the spec, not copied from either repository.

State-dict names are the reference ones:
  student.backbone.patch_embed.proj.{weight,bias}, student.backbone.cls_token,
  student.backbone.pos_embed, student.backbone.blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,
  mlp.fc1,mlp.fc2}.{weight,bias}, student.backbone.norm.{weight,bias},
  student.head.mlp.{0,2,4}.{weight,bias}, student.head.last_layer.weight_g [K,1],
  student.head.last_layer.weight_v [K,bottleneck], the same under teacher., dino_loss.center [1,K].

Besides being a library for make_fixtures.py / check_debug_step.py, the file has a small CLI
that mimics `setdino debug step` (used by `check_debug_step.py --self-test` to test the harness):
  python3 setdino_torch.py debug step --checkpoint C --inputs I --out O --num-heads H ...
"""
import argparse
import math
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------
# ViT (DINO vision_transformer.py semantics)
# --------------------------------------------------------------------------------------------

def drop_path(x, drop_prob: float = 0.0, training: bool = False):
    """Per-sample stochastic depth; a fresh mask on every call."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)
    random_tensor.floor_()
    return x.div(keep_prob) * random_tensor


class DropPath(nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        # qkv output features laid out as [3][heads][head_dim]
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, drop_path_prob=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path_prob)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) * (img_size // patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # row-major tokens


class VisionTransformer(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=384, depth=12,
                 num_heads=6, mlp_ratio=4.0, drop_path_rate=0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        dpr = [v.item() for v in torch.linspace(0, drop_path_rate, depth)] if depth > 1 else [0.0]
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, dpr[i]) for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        # Reference init (§1.2); make_fixtures overwrites everything with its own random state.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, x, w, h):
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        class_pos_embed = self.pos_embed[:, 0]
        patch_pos_embed = self.pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // self.patch_embed.patch_size
        h0 = h // self.patch_embed.patch_size
        w0, h0 = w0 + 0.1, h0 + 0.1  # DINO issue #8
        g = int(math.sqrt(N))
        patch_pos_embed = F.interpolate(
            patch_pos_embed.reshape(1, g, g, dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
            mode="bicubic",
        )
        assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

    def prepare_tokens(self, x):
        B, nc, w, h = x.shape  # DINO's naming: w is the height axis, h the width axis
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        return x + self.interpolate_pos_encoding(x, w, h)

    def forward(self, x):
        x = self.prepare_tokens(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]

    def get_intermediate_layers(self, x, n=1):
        x = self.prepare_tokens(x)
        out = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if len(self.blocks) - i <= n:
                out.append(self.norm(x))
        return out


# --------------------------------------------------------------------------------------------
# DINOHead with set aggregation
# --------------------------------------------------------------------------------------------

class WeightNormLinear(nn.Module):
    """nn.utils.weight_norm(nn.Linear(in, out, bias=False)) with dim=0, same parameter names.

    W = v * (g / ||v||_row), exactly torch._weight_norm's formula for dim 0.
    """

    def __init__(self, in_dim, out_dim):
        super().__init__()
        lin = nn.Linear(in_dim, out_dim, bias=False)  # kaiming_uniform(a=sqrt(5)) default init
        v = lin.weight.detach().clone()
        self.weight_g = nn.Parameter(v.norm(dim=1, keepdim=True))
        self.weight_v = nn.Parameter(v)

    def weight(self):
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))

    def forward(self, x):
        return F.linear(x, self.weight())


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, hidden_dim=2048, bottleneck_dim=256, n_cells=1):
        super().__init__()
        self.n_cells = n_cells
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        with torch.no_grad():
            self.last_layer.weight_g.fill_(1.0)
        self.last_layer.weight_g.requires_grad = False  # norm_last_layer=True

    def forward(self, x):
        if self.n_cells > 1:
            x = x.reshape(-1, self.n_cells, x.shape[-1]).mean(1)  # set mean (consecutive rows)
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-12)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops):
        if not isinstance(crops, (list, tuple)):
            crops = [crops]
        # group consecutive crops of equal resolution (DINO groups on shape[-1])
        widths = torch.tensor([c.shape[-1] for c in crops])
        counts = torch.unique_consecutive(widths, return_counts=True)[1]
        ends = torch.cumsum(counts, 0).tolist()
        start, outs = 0, []
        for end in ends:
            outs.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        return self.head(torch.cat(outs))


# --------------------------------------------------------------------------------------------
# DINO loss
# --------------------------------------------------------------------------------------------

class DINOLoss(nn.Module):
    def __init__(self, out_dim, ncrops, student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.ncrops = ncrops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_output, teacher_output, teacher_temp, update_center=True):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        teacher_out = F.softmax((teacher_output - self.center) / teacher_temp, dim=-1).detach().chunk(2)
        total, n_terms = 0.0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                term = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total = total + term.mean()
                n_terms += 1
        total = total / n_terms
        if update_center:
            self.update_center(teacher_output)
        return total

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
        batch_center = batch_center / len(teacher_output)
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


# --------------------------------------------------------------------------------------------
# Whole model
# --------------------------------------------------------------------------------------------

@dataclass
class Config:
    in_chans: int = 3
    patch_size: int = 8
    embed_dim: int = 24
    depth: int = 2
    num_heads: int = 2
    mlp_ratio: float = 4.0
    head_hidden: int = 40
    bottleneck: int = 16
    out_dim: int = 48
    set_size: int = 1
    n_local: int = 2
    img_size: int = 224          # pos_embed grid is (img_size // patch)^2 (+ CLS)
    student_drop_path: float = 0.0


class SetDINO(nn.Module):
    """Top-level module whose state_dict has exactly the reference names."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg

        def make(dp):
            bb = VisionTransformer(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.depth,
                                   cfg.num_heads, cfg.mlp_ratio, dp)
            hd = DINOHead(cfg.embed_dim, cfg.out_dim, cfg.head_hidden, cfg.bottleneck, cfg.set_size)
            return MultiCropWrapper(bb, hd)

        self.student = make(cfg.student_drop_path)
        self.teacher = make(0.0)
        self.teacher.load_state_dict(self.student.state_dict())  # DINO's choice
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.dino_loss = DINOLoss(cfg.out_dim, 2 + cfg.n_local)

    # -- state ------------------------------------------------------------------------------
    def export_state(self):
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_state(self, tensors, strict=True):
        sd = self.state_dict()
        missing = [k for k in sd if k not in tensors]
        if strict and missing:
            raise KeyError(f"missing tensors: {missing}")
        with torch.no_grad():
            for k, v in sd.items():
                if k in tensors:
                    t = tensors[k]
                    if tuple(t.shape) != tuple(v.shape):
                        raise ValueError(f"{k}: shape {tuple(t.shape)} vs model {tuple(v.shape)}")
                    v.copy_(t.to(v.dtype))
        # buffers are replaced, not copied in place, by DINOLoss.update_center; reload center explicitly
        if "dino_loss.center" in tensors:
            self.dino_loss.center = tensors["dino_loss.center"].to(sd["dino_loss.center"].dtype).clone()

    def trainable_student(self):
        """(full name, param) of every trainable student tensor, in module order."""
        return [("student." + n, p) for n, p in self.student.named_parameters() if p.requires_grad]


def config_from_state(tensors, num_heads, mlp_ratio=4.0, set_size=1, n_local=0):
    """Infer the architecture from tensor shapes, as `setdino debug step` does."""
    w = tensors["student.backbone.patch_embed.proj.weight"]
    dim, in_chans, patch, _ = w.shape
    depth = 0
    while f"student.backbone.blocks.{depth}.norm1.weight" in tensors:
        depth += 1
    npos = tensors["student.backbone.pos_embed"].shape[1] - 1
    g = int(round(math.sqrt(npos)))
    assert g * g == npos, "pos_embed grid must be square"
    hidden = tensors["student.head.mlp.0.weight"].shape[0]
    bottleneck = tensors["student.head.mlp.4.weight"].shape[0]
    K = tensors["student.head.last_layer.weight_v"].shape[0]
    fc1 = tensors["student.backbone.blocks.0.mlp.fc1.weight"].shape[0] if depth else int(dim * mlp_ratio)
    assert fc1 == int(dim * mlp_ratio), f"fc1 has {fc1} outputs, mlp_ratio {mlp_ratio} gives {int(dim * mlp_ratio)}"
    return Config(in_chans=in_chans, patch_size=patch, embed_dim=dim, depth=depth, num_heads=num_heads,
                  mlp_ratio=mlp_ratio, head_hidden=hidden, bottleneck=bottleneck, out_dim=K,
                  set_size=set_size, n_local=n_local, img_size=g * patch)


# --------------------------------------------------------------------------------------------
# Forward + loss, one training step
# --------------------------------------------------------------------------------------------

def crops_from_inputs(glob, loc=None):
    """glob [2, R, C, H, W], loc [L, R, C, h, w] -> list of 2 + L tensors [R, C, ., .] (set-major rows)."""
    crops = [glob[0], glob[1]]
    if loc is not None:
        crops += [loc[i] for i in range(loc.shape[0])]
    return crops


def forward_loss(model: SetDINO, crops, teacher_temp, student_temp=0.1, update_center=False):
    """Teacher on the 2 global crops (no grad), student on all crops, DINO loss with the current
    center.  Returns (loss, student_out, teacher_out); head outputs before temperatures."""
    model.dino_loss.student_temp = student_temp
    model.dino_loss.ncrops = len(crops)
    with torch.no_grad():
        teacher_out = model.teacher(crops[:2])
    student_out = model.student(crops)
    loss = model.dino_loss(student_out, teacher_out, teacher_temp, update_center=update_center)
    return loss, student_out, teacher_out


def param_groups(model: SetDINO, weight_decay):
    decay, no_decay = [], []
    for name, p in model.student.named_parameters():
        if not p.requires_grad:
            continue  # weight_g
        if name.endswith(".bias") or p.ndim == 1:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: SetDINO, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             foreach=False, fused=False)


def clip_gradients(module, clip):
    """Per-tensor norm clipping (utils.clip_gradients).  Returns {name: (norm, clipped)}."""
    info = {}
    for name, p in module.named_parameters():
        if p.grad is None:
            continue
        norm = p.grad.detach().norm(2)
        coef = clip / (norm + 1e-6)
        clipped = bool(coef < 1)
        if clipped:
            p.grad.mul_(coef)
        info[name] = (norm.item(), clipped)
    return info


def cancel_gradients_last_layer(module):
    for name, p in module.named_parameters():
        if "last_layer" in name:
            p.grad = None


@torch.no_grad()
def ema_update(model: SetDINO, m):
    for ps, pt in zip(model.student.parameters(), model.teacher.parameters()):
        pt.mul_(m).add_((1 - m) * ps.detach())


def train_step(model: SetDINO, optimizer, crops, *, teacher_temp, student_temp=0.1, clip_grad=0.0,
               freeze_last_layer=False, ema_momentum=0.996):
    """algorithm.md §4.1.  Returns a dict with loss, outputs, raw gradients and clipping info."""
    model.dino_loss.student_temp = student_temp
    model.dino_loss.ncrops = len(crops)
    with torch.no_grad():
        teacher_out = model.teacher(crops[:2])
    student_out = model.student(crops)
    loss = model.dino_loss(student_out, teacher_out, teacher_temp, update_center=True)  # center after loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    raw_grads = {"student." + n: p.grad.detach().clone()
                 for n, p in model.student.named_parameters() if p.grad is not None}
    clip_info = clip_gradients(model.student, clip_grad) if clip_grad else {}
    if freeze_last_layer:
        cancel_gradients_last_layer(model.student)
    optimizer.step()
    ema_update(model, ema_momentum)
    return {"loss": loss.detach(), "student_out": student_out.detach(), "teacher_out": teacher_out.detach(),
            "grads": raw_grads, "clip": clip_info}


# --------------------------------------------------------------------------------------------
# CLI mimicking `setdino debug step` (used to self-test check_debug_step.py)
# --------------------------------------------------------------------------------------------

def debug_step_main(argv):
    from safetensors.torch import load_file, save_file
    ap = argparse.ArgumentParser(prog="setdino_torch.py debug step")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--num-heads", type=int, required=True)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--set-size", type=int, default=1)
    ap.add_argument("--teacher-temp", type=float, default=0.04)
    ap.add_argument("--student-temp", type=float, default=0.1)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                    help="bf16: round where setdino --precision bf16 does (bf16_emulation.py)")
    a = ap.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    ck = load_file(a.checkpoint)
    inp = load_file(a.inputs)
    loc = inp.get("local")
    cfg = config_from_state(ck, a.num_heads, a.mlp_ratio, a.set_size, 0 if loc is None else loc.shape[0])
    model = SetDINO(cfg)
    model.load_state(ck)
    crops = crops_from_inputs(inp["global"].double(), None if loc is None else loc.double())
    import contextlib
    import bf16_emulation
    with bf16_emulation.emulate(sys.modules[__name__]) if a.precision == "bf16" else contextlib.nullcontext():
        loss, s_out, t_out = forward_loss(model, crops, a.teacher_temp, a.student_temp)
        loss.backward()
    out = {"loss": loss.detach().reshape(1).float(), "student_out": s_out.detach().float(),
           "teacher_out": t_out.detach().float()}
    for name, p in model.trainable_student():
        out[name] = p.grad.detach().float().contiguous()
    save_file(out, a.out)


if __name__ == "__main__":
    if sys.argv[1:3] == ["debug", "step"]:
        debug_step_main(sys.argv[3:])
    else:
        print(__doc__)
        sys.exit(2)
