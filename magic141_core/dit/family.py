"""The public weights of the HunyuanVideo-13B DiT, by how the start image enters: one DiT, five families.

| family | input channels | `image_condition` | prompt template | sampling the references use |
| --- | --- | --- | --- | --- |
| Magic141 | 33 | concat_mask | Magic141: 146 VLM tokens, then the text | 4 steps, shift 5, guidance 1 |
| HunyuanVideo-I2V v1 | 33 | concat_mask | HunyuanVideo-I2V, image interleave 2 | 50 steps, no embedded guidance |
| HunyuanVideo-I2V v2 | 16 | token_replace | HunyuanVideo-I2V, image interleave 4 | 50 steps, embedded guidance 6 |
| SkyReels-V1 I2V | 32 | concat | HunyuanVideo's text-only one | 30 steps, embedded 1 + CFG 6 |
| HunyuanVideo text-to-video | 16 | none | (no image path: refused) | |

Sources: diffusers' `HunyuanVideoImageToVideoPipeline` (v1 = `latent_concat`, v2 = `token_replace`, its default
`image_embed_interleave` 2 / 4 and its examples' guidance), ComfyUI's `supported_models.HunyuanVideoI2V` (33) /
`HunyuanVideoSkyreelsI2V` (32) / `HunyuanVideo` (16), the SkyReels-V1 inference code (CFG 6, embedded guidance 1).

Weights alone cannot tell v2 from text-to-video (both 16 channels, the same tensors) nor Magic141 from v1 (the same
layout): `resolve_family` uses, in order, an explicit choice, what the file stores (this pack's metadata, a diffusers
`config.json` beside it), the channel count, and for 16 channels the file name, and says which one decided.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .config import IMAGE_CONDITIONS, DiTConfig

FAMILY_METADATA_KEY = "magic141_family"


@dataclass(frozen=True)
class Family:
    key: str
    title: str  # what the Model Loader's `family` input and every message call it
    image_condition: str  # a key of config.IMAGE_CONDITIONS
    template: str  # prompt template its conditioning is encoded with (text.prompts.TEMPLATES); "" = none
    image_interleave: int  # HunyuanVideo-I2V template: keep every n-th image token
    steps: int  # what the references sample with (the templates use fewer on purpose, and say so)
    shift: float
    guidance: float  # embedded guidance (or, without an embedder, classifier-free guidance) scale
    cfg: float  # classifier-free guidance on top of an embedded guidance (SkyReels-V1)
    comfy_file: str  # the file name ComfyUI's own HunyuanVideo examples use ("" when there is none)

    @property
    def in_channels(self) -> int:
        return IMAGE_CONDITIONS[self.image_condition]

    @property
    def is_i2v(self) -> bool:
        return self.image_condition != "none"

    def describe(self) -> str:
        """'HunyuanVideo-I2V v2 (token replace, 16 input channels)'."""
        how = {"concat_mask": "concat + mask", "concat": "concat", "token_replace": "token replace",
               "none": "text-to-video"}[self.image_condition]
        return f"{self.title} ({how}, {self.in_channels} input channels)"

    def accepts(self, template: str | None) -> bool:
        """Whether conditioning encoded with prompt `template` suits this family (None: unknown, accepted). The
        concat + mask layout is one DiT for Magic141 and HunyuanVideo-I2V v1, so both their templates serve it."""
        if template is None:
            return True
        if self.image_condition == "concat_mask":
            return template in (MAGIC141_TEMPLATE, "hunyuan_i2v")
        return template == self.template

    def recommendation(self) -> str:
        """What the file needs, for the Model Loader's text and the CLI."""
        if not self.is_i2v:
            return "it has no image path: the image-to-video nodes refuse it"
        guidance = f"guidance {self.guidance:g}" + (f" and CFG {self.cfg:g}" if self.cfg != 1 else "")
        distilled = "distilled to 4 steps" if self.steps <= 4 else "not step-distilled"
        return f"{distilled}: about {self.steps} steps, shift {self.shift:g}, {guidance}"


MAGIC141_TEMPLATE = "magic141"
MAGIC141 = Family("magic141", "Magic141", "concat_mask", MAGIC141_TEMPLATE, 0, 4, 5.0, 1.0, 1.0, "")
HUNYUAN_I2V_V1 = Family("hunyuan_i2v_v1", "HunyuanVideo-I2V v1", "concat_mask", "hunyuan_i2v", 2, 50, 7.0, 1.0, 1.0,
                        "hunyuan_video_image_to_video_720p_bf16.safetensors")
HUNYUAN_I2V_V2 = Family("hunyuan_i2v_v2", "HunyuanVideo-I2V v2", "token_replace", "hunyuan_i2v", 4, 50, 7.0, 6.0,
                        1.0, "hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors")
SKYREELS_V1 = Family("skyreels_v1", "SkyReels-V1 I2V", "concat", "hunyuan_text", 0, 30, 7.0, 1.0, 6.0,
                     "skyreels_hunyuan_i2v_bf16.safetensors")
HUNYUAN_T2V = Family("hunyuan_t2v", "HunyuanVideo text-to-video", "none", "", 0, 50, 7.0, 6.0, 1.0,
                     "hunyuan_video_t2v_720p_bf16.safetensors")
FAMILIES = {f.key: f for f in (MAGIC141, HUNYUAN_I2V_V1, HUNYUAN_I2V_V2, SKYREELS_V1, HUNYUAN_T2V)}
AUTO = "auto"
CHOICES = [AUTO] + [f.title for f in FAMILIES.values()]  # the Model Loader's `family` input and the CLI's --family

# words in a 16-channel file's name that say image-to-video (ComfyUI's v2 file: ..._v2_replace_image_to_video_...)
_I2V_NAME = re.compile(r"(^|[^a-z0-9])(i2v|image_?to_?video|img2vid|imagetovideo|replace)([^a-z0-9]|$)|image_to_video")


def family_by_name(name: str) -> Family:
    """The family of a key, title or short name (v1, v2, skyreels, t2v, magic141); ValueError listing them."""
    short = {"v1": HUNYUAN_I2V_V1, "v2": HUNYUAN_I2V_V2, "skyreels": SKYREELS_V1, "t2v": HUNYUAN_T2V}
    lowered = name.strip().lower()
    for family in FAMILIES.values():
        if lowered in (family.key, family.title.lower()):
            return family
    if lowered in short:
        return short[lowered]
    raise ValueError(f"unknown model family {name!r}; choose one of: auto, " +
                     ", ".join(f.title for f in FAMILIES.values()) + " (or v1, v2, skyreels, t2v, magic141)")


def default_family(config: DiTConfig) -> Family:
    """The family a model built from `config` is, when nothing else says (models this pack makes are Magic141)."""
    return {"concat_mask": MAGIC141, "concat": SKYREELS_V1, "token_replace": HUNYUAN_I2V_V2,
            "none": HUNYUAN_T2V}[config.image_condition]


def diffusers_image_condition(path: Path) -> str | None:
    """`image_condition_type` of the diffusers `config.json` beside a transformer file, mapped to ours; None when
    there is no such file or it does not say (a malformed one is ignored: the tensors still decide)."""
    config = path.parent / "config.json"
    try:
        data = json.loads(config.read_text()) if config.is_file() and config.stat().st_size < 1 << 20 else {}
    except (OSError, ValueError):
        return None
    kind = data.get("image_condition_type") if isinstance(data, dict) else None
    return {"latent_concat": "concat_mask", "token_replace": "token_replace"}.get(kind)


def resolve_family(config: DiTConfig, file: str, choice: str = AUTO, stored: str | None = None,
                   diffusers_condition: str | None = None, text_guidance: bool = False,
                   pack_written: bool = False) -> tuple[Family, str]:
    """(the family of the DiT file `file`, why). `choice`: "auto" or a family (key / title / short name);
    `stored`: the family key this pack saved in the file's metadata (`FAMILY_METADATA_KEY`);
    `diffusers_condition`: from a diffusers config.json (`diffusers_image_condition`); `text_guidance`: the file has
    Magic141's `text_guidance_in`; `pack_written`: the file carries this pack's config but no family (written before
    families were stored, e.g. the demo's: a 33-channel one is Magic141's).

    Raises ValueError when a choice contradicts the file's input channels, naming both and the choices that fit."""
    channels = config.in_channels
    if choice != AUTO:
        family = family_by_name(choice)
        if family.in_channels != channels:
            fits = ", ".join(f.title for f in FAMILIES.values() if f.in_channels == channels)
            raise ValueError(f"{Path(file).name} has {channels} input channels but {family.describe()} needs "
                             f"{family.in_channels}; choose family auto (it reads the file) or one of: {fits}")
        return family, "chosen"
    if stored in FAMILIES and FAMILIES[stored].in_channels == channels:
        return FAMILIES[stored], "stored in the file"
    if diffusers_condition is not None and IMAGE_CONDITIONS[diffusers_condition] == channels:
        family = HUNYUAN_I2V_V2 if diffusers_condition == "token_replace" else HUNYUAN_I2V_V1
        return family, f"its diffusers config.json says {diffusers_condition}"
    if channels == IMAGE_CONDITIONS["concat"]:
        return SKYREELS_V1, "32 input channels (concat without mask)"
    if channels == IMAGE_CONDITIONS["concat_mask"]:
        if text_guidance:
            return MAGIC141, "33 input channels and Magic141's text_guidance_in"
        if pack_written:
            return MAGIC141, "33 input channels, written by this pack before it stored families"
        return HUNYUAN_I2V_V1, "33 input channels (concat + mask; Magic141's own weights were never published)"
    if _I2V_NAME.search(Path(file).name.lower()):
        return HUNYUAN_I2V_V2, "16 input channels and the file name says image-to-video"
    return HUNYUAN_T2V, ("16 input channels and nothing in the file says image-to-video (for HunyuanVideo-I2V v2 "
                         "weights choose the family 'HunyuanVideo-I2V v2')")
