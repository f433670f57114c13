"""The DiT under Magic141's guidance modes, as one `velocity(x, sigma)` callable (model.md, "Guidance"):
- a checkpoint with an applied guidance embedder (HunyuanVideo `guidance_in`, or Magic141 `text_guidance_in` when
  `model.apply_text_guidance` is set) receives the scale as an input: one forward per step;
- otherwise guidance 1.0 (Magic141's distilled default) is one plain forward per step;
- otherwise real classifier-free guidance: unconditional and conditional in ONE batched forward per step,
  v = v_uncond + g (v_cond - v_uncond), as the official sampler computes it.
`cfg` asks for real classifier-free guidance explicitly, also on top of an embedded guidance (SkyReels-V1 samples
with embedded guidance 1 and CFG 6, both halves getting the embedded scale, as its pipeline does; diffusers'
`true_cfg_scale`).
"""

from __future__ import annotations

import math

import torch

from ..runtime.finite import check_finite, dit_advice
from .conditioning import Conditioning, TextConditioning
from .schedule import NUM_TRAIN_TIMESTEPS


class GuidedVelocity:
    """velocity(x, sigma) for the sampler: the DiT under one of the three guidance modes above (the
    module docstring)."""

    def __init__(self, model, cond: Conditioning, guidance: float, cfg: float = 1.0):
        for name, value in (("guidance", guidance), ("cfg", cfg)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}; Magic141 is distilled at 1.0")
        self.model, self.guidance, self.device = model, float(guidance), device_of(model)
        self.embedded = model.guidance_embedder is not None
        if cfg != 1.0 and not self.embedded and self.guidance not in (1.0, float(cfg)):
            raise ValueError(f"guidance {guidance} and cfg {cfg} on a model without a guidance embedder both ask for "
                             "classifier-free guidance; set one of them (the other to 1)")
        self.scale = float(cfg) if cfg != 1.0 else (1.0 if self.embedded else self.guidance)  # the CFG scale
        self.cfg = self.scale != 1.0
        if self.cfg and cond.negative is None:
            raise ValueError(
                f"classifier-free guidance at {self.scale:g} (guidance or cfg above 1 without a guidance embedder, "
                "or cfg above 1) needs the negative prompt's conditioning; encode it, or use 1.0"
            )
        self.parts = [cond.negative, cond.positive] if self.cfg else [cond.positive]
        self.reference = None if cond.reference is None else cond.reference.to(self.device)
        self._inputs = None  # text and reference for one batch size, built on the first step

    def _batched(self, batch: int):
        if self._inputs is None or self._inputs[0] != batch:
            text = TextConditioning.cat([p.repeat_to(batch) for p in self.parts]).to(self.device)
            reference = self.reference
            if reference is not None and self.cfg and reference.shape[0] > 1:
                reference = torch.cat([reference, reference])
            self._inputs = (batch, text, reference)
        return self._inputs[1:]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        text, reference = self._batched(x.shape[0])
        batch = text.batch_size
        t = (sigma * NUM_TRAIN_TIMESTEPS).expand(batch).to(self.device)
        guidance = torch.full((batch,), self.guidance, device=self.device) if self.embedded else None
        x_in = (torch.cat([x, x]) if self.cfg else x).to(self.device)
        v = self.model(
            x_in, t, text.tokens, text.mask, text.pooled, reference=reference, guidance=guidance
        ).float()
        check_finite(v, f"the transformer (denoising at timestep {t[0].item():.0f})", _activation_dtype(self.model),
                     dit_advice(self.model))
        if self.cfg:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + self.scale * (v_cond - v_uncond)
        return v.to(x.device)


def _activation_dtype(model) -> torch.dtype:
    return getattr(model, "activation_dtype", next(model.parameters()).dtype)


def device_of(model) -> torch.device:
    return next(model.parameters()).device
