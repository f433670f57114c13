"""The token refiner (`txt_in`): maps LLM/VLM tokens [B, L, 4096] to the DiT width before the dual-stream blocks.

Two self-attention blocks (no q/k norm) under the text mask, gated by a vector made of the timestep embedding plus
the projection of the mask-weighted mean of the tokens (LI-DiT's refiner, as HunyuanVideo uses it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import MLP, CoreOps, TextProjection, TimestepEmbedder, attention_of


class TokenRefinerBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, operations=CoreOps):
        super().__init__()
        self.num_heads = num_heads
        self.attention = attention_of(operations)
        self.norm1 = operations.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=True)
        self.self_attn_qkv = operations.Linear(hidden_size, 3 * hidden_size)
        self.self_attn_proj = operations.Linear(hidden_size, hidden_size)
        self.norm2 = operations.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=True)
        self.mlp = MLP(hidden_size, int(hidden_size * mlp_ratio), F.silu, operations)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), operations.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, key_mask: torch.Tensor | None,
                transformer_options: dict | None = None) -> torch.Tensor:
        """x: [B, L, D]; c: [B, D]; key_mask: [B, 1, 1, L] or None."""
        gate_attn, gate_mlp = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)  # [B, 1, D] each
        q, k, v = rearrange(self.self_attn_qkv(self.norm1(x)), "b l (k h d) -> k b h l d", k=3, h=self.num_heads)
        x = x + gate_attn * self.self_attn_proj(self.attention(q, k, v, key_mask, transformer_options or {}))
        return x + gate_mlp * self.mlp(self.norm2(x))


class IndividualTokenRefiner(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, depth: int, mlp_ratio: float, operations=CoreOps):
        super().__init__()
        self.blocks = nn.ModuleList(TokenRefinerBlock(hidden_size, num_heads, mlp_ratio, operations)
                                    for _ in range(depth))

    def forward(self, x: torch.Tensor, c: torch.Tensor, key_mask: torch.Tensor | None,
                transformer_options: dict | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, c, key_mask, transformer_options)
        return x


class TokenRefiner(nn.Module):
    def __init__(self, text_dim: int, hidden_size: int, num_heads: int, depth: int, mlp_ratio: float = 4.0,
                 operations=CoreOps):
        super().__init__()
        self.input_embedder = operations.Linear(text_dim, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size, operations=operations)
        self.c_embedder = TextProjection(text_dim, hidden_size, operations)
        self.individual_token_refiner = IndividualTokenRefiner(hidden_size, num_heads, depth, mlp_ratio, operations)

    def forward(
        self, txt: torch.Tensor, t: torch.Tensor, txt_mask: torch.Tensor, key_mask: torch.Tensor | None,
        transformer_options: dict | None = None,
    ) -> torch.Tensor:
        """txt: [B, L, C]; t: [B]; txt_mask: [B, L] (1 = token); key_mask: the same mask as [B, 1, 1, L] or None;
        transformer_options: the host's options, handed to each attention call (`dit.hooks`).

        Padding queries see only valid keys here (the reference lets them see token 0 only); their outputs are
        never attended to by a valid token later, so the video tokens are unchanged.
        """
        weights = txt_mask.float().unsqueeze(-1)  # [B, L, 1]
        pooled = ((txt.float() * weights).sum(dim=1) / weights.sum(dim=1)).to(txt.dtype)  # [B, C] valid-token mean
        c = self.t_embedder(t, txt.dtype) + self.c_embedder(pooled)
        return self.individual_token_refiner(self.input_embedder(txt), c, key_mask, transformer_options)
