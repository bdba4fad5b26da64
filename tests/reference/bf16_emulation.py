"""The bf16 rounding points of setdino's tensor-core path, emulated in PyTorch (an independent reference).

`with emulate(sd):` makes the model of setdino_torch.py (`sd`) round exactly the values setdino's
`--precision bf16` rounds (src/backend/precision.rs), and nothing else, while every other operation keeps
the reference's own dtype (float32 or float64):

- every nn.Linear (backbone qkv, proj, fc1, fc2; the head's MLP layers) and the patch embedding:
  forward bf16(x)·bf16(W)ᵀ + b; backward dx = bf16(dy)·bf16(W), dW = bf16(dy)ᵀ·bf16(x), db = Σ dy;
- attention over N ≤ 64 tokens with head size ≤ 64: q, k, v rounded; S = q·kᵀ·scale, P = softmax(S);
  out = bf16(P)·v; backward dP = bf16(dout)·vᵀ, dS = P ⊙ (dP − Σ_j P·dP), dq = bf16(dS)·k·scale,
  dk = bf16(dS)ᵀ·q·scale, dv = bf16(P)ᵀ·bf16(dout) (longer sequences stay unrounded, as in setdino);
- the head's weight-normalised prototype layer stays unrounded (it is a plain F.linear in the reference,
  and setdino computes it in f32 at every precision: `Backend::matmul_forward_full`).

Written from the policy text, not from setdino's code: a disagreement means one of the two is wrong.
"""
import contextlib

import torch
import torch.nn.functional as F

ATTENTION_BF16_MAX = 64


def rb(x):
    """x rounded to the nearest bf16 (ties to even), in x's own dtype."""
    return x.to(torch.bfloat16).to(x.dtype)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        xr, wr = rb(x), rb(w)
        ctx.save_for_backward(xr, wr)
        ctx.has_bias = b is not None
        y = xr @ wr.transpose(0, 1)
        return y + b if b is not None else y

    @staticmethod
    def backward(ctx, dy):
        xr, wr = ctx.saved_tensors
        dyr = rb(dy)
        dx = dyr @ wr
        dw = dyr.reshape(-1, dy.shape[-1]).transpose(0, 1) @ xr.reshape(-1, xr.shape[-1])
        db = dy.reshape(-1, dy.shape[-1]).sum(0) if ctx.has_bias else None
        return dx, dw, db


class _PatchEmbed(torch.autograd.Function):
    """Conv2d with kernel = stride = p: a Linear over the patches (setdino's im2col GEMM)."""

    @staticmethod
    def forward(ctx, x, w, b, p):
        xr, wr = rb(x), rb(w)
        ctx.save_for_backward(xr)
        ctx.wshape, ctx.p = w.shape, p
        return F.conv2d(xr, wr, b, stride=p)

    @staticmethod
    def backward(ctx, dy):
        (xr,) = ctx.saved_tensors
        dw = torch.nn.grad.conv2d_weight(xr, ctx.wshape, rb(dy), stride=ctx.p)
        return None, dw, dy.sum((0, 2, 3)), None


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale):
        qr, kr, vr = rb(q), rb(k), rb(v)
        p = ((qr @ kr.transpose(-2, -1)) * scale).softmax(dim=-1)
        ctx.save_for_backward(qr, kr, vr, p)
        ctx.scale = scale
        return rb(p) @ vr

    @staticmethod
    def backward(ctx, dout):
        qr, kr, vr, p = ctx.saved_tensors
        dor = rb(dout)
        dp = dor @ vr.transpose(-2, -1)
        ds = p * (dp - (p * dp).sum(dim=-1, keepdim=True))
        dsr = rb(ds)
        dq = dsr @ kr * ctx.scale
        dk = dsr.transpose(-2, -1) @ qr * ctx.scale
        dv = rb(p).transpose(-2, -1) @ dor
        return dq, dk, dv, None


def _linear_forward(self, x):
    return _Linear.apply(x, self.weight, self.bias)


def _patch_forward(self, x):
    conv = self.proj
    y = _PatchEmbed.apply(x, conv.weight, conv.bias, self.patch_size)
    return y.flatten(2).transpose(1, 2)


def _attention_forward(original):
    def forward(self, x):
        B, N, C = x.shape
        hs = C // self.num_heads
        if N > ATTENTION_BF16_MAX or hs > ATTENTION_BF16_MAX:
            return original(self, x)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, hs).permute(2, 0, 3, 1, 4)
        o = _Attention.apply(qkv[0], qkv[1], qkv[2], self.scale)
        return self.proj(o.transpose(1, 2).reshape(B, N, C))

    return forward


@contextlib.contextmanager
def emulate(sd):
    """Patches nn.Linear, sd.PatchEmbed and sd.Attention for the duration of the block."""
    saved = (torch.nn.Linear.forward, sd.PatchEmbed.forward, sd.Attention.forward)
    torch.nn.Linear.forward = _linear_forward
    sd.PatchEmbed.forward = _patch_forward
    sd.Attention.forward = _attention_forward(saved[2])
    try:
        yield
    finally:
        torch.nn.Linear.forward, sd.PatchEmbed.forward, sd.Attention.forward = saved
