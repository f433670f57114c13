"""What the sampler consumes: the text sequence, its mask and the CLIP pooled vector, for the prompt and (for
classifier-free guidance) the negative prompt; and the start image's latent for image-to-video.

The text sequence of Magic141 is [VLM image tokens ; LLM text tokens], right-padded, with mask [ones ; text mask];
HunyuanVideo-I2V's interleaves the image tokens of one LLaVA pass before its text, SkyReels-V1's is text only
(`text.prompts.TEMPLATES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TextConditioning:
    tokens: torch.Tensor  # [B, L, C] text sequence (C = 4096 for the 13B model)
    mask: torch.Tensor  # [B, L] 1 for tokens, 0 for right padding
    pooled: torch.Tensor  # [B, P] CLIP-L pooled embedding (P = 768)

    def __post_init__(self):
        B, L = self.tokens.shape[:2] if self.tokens.ndim == 3 else (None, None)
        if self.tokens.ndim != 3 or tuple(self.mask.shape) != (B, L) or self.pooled.ndim != 2 or len(self.pooled) != B:
            raise ValueError(
                "text conditioning must be tokens [B, L, C], mask [B, L] and pooled [B, P]; got "
                f"{tuple(self.tokens.shape)}, {tuple(self.mask.shape)}, {tuple(self.pooled.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @staticmethod
    def cat(items: list["TextConditioning"]) -> "TextConditioning":
        """Concatenate along the batch, right-padding every sequence to the longest."""
        length = max(c.tokens.shape[1] for c in items)
        return TextConditioning(
            torch.cat([F.pad(c.tokens, (0, 0, 0, length - c.tokens.shape[1])) for c in items]),
            torch.cat([F.pad(c.mask, (0, length - c.mask.shape[1])) for c in items]),
            torch.cat([c.pooled for c in items]),
        )

    def repeat_to(self, batch: int) -> "TextConditioning":
        """This conditioning for `batch` samples: itself, or a batch of one repeated."""
        if self.batch_size == batch:
            return self
        if self.batch_size != 1:
            raise ValueError(f"conditioning has batch {self.batch_size} but the latent has batch {batch}")
        return TextConditioning(*(t.expand(batch, *t.shape[1:]) for t in (self.tokens, self.mask, self.pooled)))

    def to(self, device=None, dtype=None) -> "TextConditioning":
        return TextConditioning(self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype))


@dataclass
class Conditioning:
    positive: TextConditioning
    negative: TextConditioning | None = None  # only needed for real classifier-free guidance
    # [B or 1, 16, L, h, w] start latent, scaled (model space): the start image (L = 1) or L >= 2 frames of motion
    # context. Concat families take it in the first L frames of their extra channels (mask 1 there where they have
    # one), token replace holds the first L latent frames at it (`dit.model.image_to_video_input`).
    reference: torch.Tensor | None = None
    template: str | None = None  # the prompt template it was encoded with (text.prompts.TEMPLATES); None: unknown
    family: str | None = None  # the model family it was encoded for (dit.family.FAMILIES key); None: not told
    # native conditioning: "concat" (HunyuanImageToVideo v1) or "token_replace" (v2), what its start image is
    # prepared for; None for Magic141's own (its reference serves every family)
    image_condition: str | None = None
