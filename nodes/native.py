"""Native CONDITIONING <-> Magic141 conditioning, both ways.

ComfyUI's CONDITIONING is a list of `[tokens [B, L, C], {extras}]` (no ComfyUI import is needed to read or build
it). For HunyuanVideo image-to-video, native `HunyuanImageToVideo` v1 ("concat") adds `concat_latent_image` (the
start image's UNSCALED latent [B, 16, F_ref, h, w]) and `concat_mask` ([1, 1, T, h, w], 0 on the reference frames,
1 elsewhere); the model turns them into [reference zero-padded in time ; 1 - mask], the same 33-channel input
Magic141 builds (`dit.model.image_to_video_input`); SkyReels-V1's model takes the image without the mask (32).
`HunyuanImageToVideo` v2 ("replace") adds only `guiding_frame_index` 0: the start image's latent is written into
the first frames of the LATENT, whose `noise_mask` (0 there) keeps them clean. `pooled_output` is the CLIP-L vector.

Our tokens go out with their padding cropped: ComfyUI's own HunyuanVideo token refiner averages over every token
it is given, so padding would change its result (~2e-2). One sample: cropped to its length, no mask. Several
samples of different lengths: padded to the longest, with `attention_mask` [B, L] (exact on Magic141's model; our
sampler crops per sample again for ComfyUI's own model, see `host/native_model.py`). A positive and a
negative of different lengths are never concatenated by ComfyUI (HunyuanVideo's text is a `CONDRegular`), so
classifier-free guidance in KSampler runs them as separate batches.
"""

from __future__ import annotations

import dataclasses

import torch

from ..magic141_core.dit.family import FAMILIES
from ..magic141_core.sampling.conditioning import Conditioning, TextConditioning
from ..magic141_core.text.prompts import TEMPLATES
from ..magic141_core.vae import scale_latent, unscale_latent


def to_native(text: TextConditioning, reference: torch.Tensor | None = None, frames: int | None = None,
              image_condition: str = "concat_mask") -> list:
    """Our text conditioning (+ the SCALED reference latent [B or 1, 16, F_ref, h, w] and the video's latent frame
    count) as native CONDITIONING, set exactly as `HunyuanImageToVideo` sets it for a model of `image_condition`:
    v1 (concat) for the concat families, v2 (replace) for token replace, whose start image then goes into the
    LATENT (`native_latent`)."""
    length = int(text.mask.sum(dim=1).max())
    tokens, mask = text.tokens[:, :length], text.mask[:, :length]
    extras = {"pooled_output": text.pooled}
    if not bool(mask.all()):
        extras["attention_mask"] = mask
    if reference is not None and image_condition == "token_replace":
        extras["guiding_frame_index"] = 0
    elif reference is not None:
        ref_frames, (h, w) = reference.shape[2], reference.shape[-2:]
        concat_mask = torch.ones(1, 1, frames, h, w, dtype=torch.float32, device=reference.device)
        concat_mask[:, :, :ref_frames] = 0.0
        extras |= {"concat_latent_image": unscale_latent(reference), "concat_mask": concat_mask}
    return [[tokens, extras]]


def native_latent(shape: tuple[int, ...], reference: torch.Tensor | None, image_condition: str, device=None) -> dict:
    """The empty video LATENT of `shape` [B, 16, T, h, w]; for token replace, as `HunyuanImageToVideo` v2 makes
    it: its first F_ref frames the UNSCALED start latent, `noise_mask` 0 there (native KSampler keeps them)."""
    samples = torch.zeros(shape, device=device)
    if image_condition != "token_replace" or reference is None:
        return {"samples": samples}
    frames = reference.shape[2]
    samples[:, :, :frames] = unscale_latent(reference).to(samples)
    noise_mask = torch.ones(1, 1, shape[2], *shape[3:], device=device)
    noise_mask[:, :, :frames] = 0.0
    return {"samples": samples, "noise_mask": noise_mask}


def from_native(conditioning, name: str, latent: dict | None = None
                ) -> tuple[TextConditioning, torch.Tensor | None, str | None]:
    """Native CONDITIONING -> (text conditioning, SCALED reference latent or None, what it was prepared for:
    "concat" (HunyuanImageToVideo v1), "token_replace" (v2) or None). A v2 conditioning's start image is read from
    `latent` (HunyuanImageToVideo v2's, with its noise_mask) when given. Raises ValueError naming the input `name`
    when it is not one HunyuanVideo-style entry (tokens + pooled_output; v1 or v2 image)."""
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"{name} is empty or not a CONDITIONING; connect Magic141 Encode / Image To Video or "
                         "TextEncodeHunyuanVideo_ImageToVideo (+ HunyuanImageToVideo)")
    if len(conditioning) != 1:
        raise ValueError(f"{name} holds {len(conditioning)} conditionings (combined, area or timestep "
                         "conditioning); Magic141's sampler takes one: encode a single prompt")
    entry = conditioning[0]
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], torch.Tensor)
            and isinstance(entry[1], dict)):
        raise ValueError(f"{name} is not a CONDITIONING (each entry is [tokens, options]; got "
                         f"{type(entry).__name__}); connect Magic141 Encode / Image To Video or "
                         "TextEncodeHunyuanVideo_ImageToVideo")
    tokens, extras = entry
    pooled = extras.get("pooled_output")
    if tokens.ndim != 3 or not isinstance(pooled, torch.Tensor):
        raise ValueError(f"{name} is not HunyuanVideo conditioning (tokens {tuple(tokens.shape)}, pooled_output "
                         f"{tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else 'missing'}); encode it with "
                         "TextEncodeHunyuanVideo_ImageToVideo or Magic141 Encode")
    if "ref_latent" in extras:
        raise ValueError(f"{name} comes from HunyuanImageToVideo 'custom' (a reference latent beside the video), "
                         "which no HunyuanVideo-I2V family was trained on; use 'v1 (concat)' or 'v2 (replace)'")
    mask = extras.get("attention_mask")
    if mask is None:
        mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
    text = TextConditioning(tokens, mask.to(tokens.device).long(), pooled.reshape(len(pooled), -1))
    if "guiding_frame_index" in extras:
        return text, None if latent is None else _replaced_frames(latent, name), "token_replace"
    latent = extras.get("concat_latent_image")
    if latent is None:
        return text, None, None
    if not isinstance(latent, torch.Tensor) or latent.ndim != 5 or latent.shape[1] != 16:
        raise ValueError(f"{name}: its start image latent (concat_latent_image) is "
                         f"{list(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__}, not a "
                         "HunyuanVideo video latent [B, 16, T, H/8, W/8] (an image model's, e.g. from "
                         "InpaintModelConditioning?); use HunyuanImageToVideo v1 or Magic141 Image To Video")
    ref_frames = latent.shape[2]
    concat_mask = extras.get("concat_mask")
    if concat_mask is not None:
        frame_zero = (concat_mask.reshape(-1, *concat_mask.shape[-3:])[0] == 0).flatten(1).all(dim=1)
        start_frames = int(frame_zero.int().cumprod(0).sum())
        if start_frames != ref_frames or bool(frame_zero[start_frames:].any()):
            raise ValueError(f"{name}: concat_mask marks {int(frame_zero.sum())} frame(s) as given but the start "
                             f"image latent has {ref_frames}; use HunyuanImageToVideo v1 or Magic141 Image To Video")
    return text, scale_latent(latent.float()), "concat"


V2_LATENT = ("comes from HunyuanImageToVideo 'v2 (replace)', whose start image is in its LATENT: connect that "
             "node's latent output (it has a noise mask), not an empty latent")


def _replaced_frames(latent: dict, name: str) -> torch.Tensor | None:
    """The SCALED start latent HunyuanImageToVideo v2 wrote into the first frames of `latent` (where its noise_mask
    is 0); None for a latent without a noise mask. ValueError when its mask keeps no leading frames."""
    samples, noise_mask = latent.get("samples"), latent.get("noise_mask")
    if noise_mask is None:
        return None
    kept = (noise_mask.reshape(-1, *noise_mask.shape[-3:])[0] == 0).flatten(1).all(dim=1)  # [T] per latent frame
    frames = int(kept.int().cumprod(0).sum())
    if frames == 0 or bool(kept[frames:].any()):
        raise ValueError(f"{name}: the latent's noise_mask does not keep its first frames (HunyuanImageToVideo v2 "
                         "keeps the start image's); connect that node's latent output")
    return scale_latent(samples[:, :, :frames].float())


def check_widths(model, cond: Conditioning, node: str) -> None:
    """Refuse conditioning encoded for another model family (its token or pooled width differs from what `model`,
    a core DiT or `NativeHunyuanDiT`, embeds) with a message, instead of a shape error deep inside torch."""
    widths = getattr(model, "config", model)
    for part, text in (("conditioning", cond.positive), ("negative", cond.negative)):
        if text is not None and (text.tokens.shape[-1], text.pooled.shape[-1]) != (widths.text_dim, widths.pooled_dim):
            raise ValueError(
                f"{node}: the {part} has text tokens {text.tokens.shape[-1]} wide and a pooled vector of "
                f"{text.pooled.shape[-1]}, but this model takes {widths.text_dim} and {widths.pooled_dim}: it was "
                "encoded for another model; use Magic141 Encode, or TextEncodeHunyuanVideo_ImageToVideo with the "
                "HunyuanVideo text encoders")


def check_template(model, cond: Conditioning, node: str) -> None:
    """Refuse conditioning whose prompt template does not suit the model's family (`Family.accepts`), naming both
    and the fix, instead of a video that quietly ignores half its conditioning."""
    family = model.family
    if family.is_i2v and not family.accepts(cond.template):
        raise ValueError(
            f"{node}: the conditioning was encoded with the {TEMPLATES[cond.template]} prompt template, but the model "
            f"is {family.describe()}, which reads the {TEMPLATES[family.template]} one. Connect the model to Magic141 "
            "Encode's model input (its template then follows the model), or choose that template there")


class FixedEncoders:
    """Native CONDITIONING as Long Video's `encoders`: the same text and image tokens for every window (the
    window's own start latent is still set by the runner)."""

    def __init__(self, cond: Conditioning):
        self.cond = cond

    def encode(self, prompt, image, negative: bool = False, **_):
        return dataclasses.replace(self.cond, negative=self.cond.negative if negative else None, reference=None)


def token_replace(conditioning) -> bool:
    """Whether `conditioning` (ours, or None) is for a token-replace model (HunyuanVideo-I2V v2): made by native
    HunyuanImageToVideo 'v2 (replace)', or by Magic141 Image To Video for a v2 model; its LATENT then carries a
    noise_mask keeping the start frames (see `native_latent`)."""
    family = FAMILIES.get(getattr(conditioning, "family", None))
    return "token_replace" in (getattr(conditioning, "image_condition", None), family and family.image_condition)


def magic141_conditioning(positive, negative=None, latent: dict | None = None) -> Conditioning:
    """Our `Conditioning` from Magic141 conditioning or native positive (+ optional negative) CONDITIONING; a v2
    (replace) native conditioning takes its start image from `latent`."""
    if not isinstance(positive, list):  # Magic141 conditioning (duck-typed: tests hold their own copy of the core)
        if negative is None:
            return positive
        return dataclasses.replace(positive, negative=from_native(negative, "negative")[0])
    text, reference, image_condition = from_native(positive, "conditioning", latent)
    return Conditioning(text, None if negative is None else from_native(negative, "negative")[0], reference,
                        image_condition=image_condition)
