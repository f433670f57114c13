"""Dual-stream ("double") and single-stream blocks and the final layer of the HunyuanVideo / Magic141 DiT.

Shapes: video tokens img [B, Li, D], text tokens txt [B, Lt, D], conditioning vec [B, D]; (cos, sin) is the RoPE
table of the joint sequence [video ; text] ([Li + Lt, Dh], identity on text); key_mask [B, 1, 1, Li + Lt] or None.

Token replace (HunyuanVideo-I2V v2): vec is [B, 2, D], the timestep-0 vector then the step's, and `first` video
tokens (the clean reference frames) are modulated and gated with row 0, every other video token with row 1; the
text stream always uses row 1 (the official code's `token_replace_vec`; diffusers' TokenReplace blocks). The same
blocks serve every family: with vec [B, D] and first = 0 nothing changes.

`operations` is the layer factory (`layers.CoreOps`, or ComfyUI's ops inside ComfyUI); `transformer_options` the
host's per-forward options (`dit.hooks`): they reach every attention call and the attention-output patches.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .attention import apply_rope
from .hooks import output_patches
from .layers import MLP, CoreOps, Modulation, attention_of, gated, gelu_tanh, layer_norm, modulate


def _heads(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    return rearrange(qkv, "b l (k h d) -> k b h l d", k=3, h=num_heads)  # [3, B, H, L, Dh]


class DoubleStreamBlock(nn.Module):
    """Separate weights for video and text, one joint attention over [video ; text] (SD3 / Flux MM-DiT)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, operations=CoreOps):
        super().__init__()
        self.num_heads = num_heads
        self.attention = attention_of(operations)
        head_dim, mlp_hidden = hidden_size // num_heads, int(hidden_size * mlp_ratio)
        ops = operations
        for stream in ("img", "txt"):
            setattr(self, f"{stream}_mod", Modulation(hidden_size, 6, ops))
            setattr(self, f"{stream}_attn_qkv", ops.Linear(hidden_size, 3 * hidden_size))
            setattr(self, f"{stream}_attn_q_norm", ops.RMSNorm(head_dim, eps=1e-6))
            setattr(self, f"{stream}_attn_k_norm", ops.RMSNorm(head_dim, eps=1e-6))
            setattr(self, f"{stream}_attn_proj", ops.Linear(hidden_size, hidden_size))
            setattr(self, f"{stream}_mlp", MLP(hidden_size, mlp_hidden, gelu_tanh, ops))

    def _qkv(self, stream: str, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, first: int = 0):
        modulated = modulate(layer_norm(x), shift, scale, first)
        q, k, v = _heads(getattr(self, f"{stream}_attn_qkv")(modulated), self.num_heads)
        return getattr(self, f"{stream}_attn_q_norm")(q), getattr(self, f"{stream}_attn_k_norm")(k), v

    def _residual(self, stream, x, attn, mods, first: int = 0):
        _, _, gate1, shift2, scale2, gate2 = mods
        x = x + gated(getattr(self, f"{stream}_attn_proj")(attn), gate1, first)
        return x + gated(getattr(self, f"{stream}_mlp")(modulate(layer_norm(x), shift2, scale2, first)), gate2, first)

    def forward(self, img, txt, vec, rope, key_mask, first: int = 0, transformer_options: dict | None = None):
        options = transformer_options or {}
        img_mods = self.img_mod(vec)  # 6 x [B, 1, D] ([B, 2, D] under token replace)
        txt_mods = self.txt_mod(vec[:, -1] if vec.ndim == 3 else vec)  # 6 x [B, 1, D]: text never token-replaced
        img_q, img_k, img_v = self._qkv("img", img, *img_mods[:2], first)
        txt_q, txt_k, txt_v = self._qkv("txt", txt, *txt_mods[:2])
        q = apply_rope(torch.cat([img_q, txt_q], dim=2), *rope)  # [B, H, Li + Lt, Dh]
        k = apply_rope(torch.cat([img_k, txt_k], dim=2), *rope)
        v = torch.cat([img_v, txt_v], dim=2)
        img_len = img.shape[1]
        attn = self.attention(q, k, v, key_mask, options)  # [B, Li + Lt, D]
        attn = output_patches(attn, options, [0, img_len])
        img = self._residual("img", img, attn[:, :img_len], img_mods, first)
        txt = self._residual("txt", txt, attn[:, img_len:], txt_mods)
        return img, txt


class SingleStreamBlock(nn.Module):
    """Shared weights over [video ; text]: one fused linear for qkv + MLP-in, one for attention-out + MLP-out."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, operations=CoreOps):
        super().__init__()
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.attention = attention_of(operations)
        head_dim, self.mlp_hidden = hidden_size // num_heads, int(hidden_size * mlp_ratio)
        self.linear1 = operations.Linear(hidden_size, 3 * hidden_size + self.mlp_hidden)
        self.linear2 = operations.Linear(hidden_size + self.mlp_hidden, hidden_size)
        self.q_norm = operations.RMSNorm(head_dim, eps=1e-6)
        self.k_norm = operations.RMSNorm(head_dim, eps=1e-6)
        self.modulation = Modulation(hidden_size, 3, operations)

    def forward(self, x, vec, rope, key_mask, first: int = 0, transformer_options: dict | None = None):
        """x: [B, Li + Lt, D], video first: the `first` reference tokens lead the sequence (`img_slice` in the
        options says where the video tokens end)."""
        options = transformer_options or {}
        shift, scale, gate = self.modulation(vec)
        qkv, mlp = self.linear1(modulate(layer_norm(x), shift, scale, first)).split(
            [3 * self.hidden_size, self.mlp_hidden], dim=-1
        )
        q, k, v = _heads(qkv, self.num_heads)
        q, k = apply_rope(self.q_norm(q), *rope), apply_rope(self.k_norm(k), *rope)
        attn = self.attention(q, k, v, key_mask, options)  # [B, L, D]
        attn = output_patches(attn, options, options.get("img_slice", [0, x.shape[1]]))
        return x + gated(self.linear2(torch.cat([attn, gelu_tanh(mlp)], dim=-1)), gate, first)


class FinalLayer(nn.Module):
    """LayerNorm + adaLN (shift, then scale: the checkpoint's order; diffusers stores scale first) + linear."""

    def __init__(self, hidden_size: int, patch_numel: int, out_channels: int, operations=CoreOps):
        super().__init__()
        self.linear = operations.Linear(hidden_size, patch_numel * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), operations.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], vec [B, D] (the step's vector for every token: the velocity of token-replaced frames is
        discarded, so diffusers' norm_out uses one vector too)."""
        shift, scale = self.adaLN_modulation(vec).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(modulate(layer_norm(x), shift, scale))
