"""`Magic141Encoders`: prompt + reference image -> the `Conditioning` the sampler consumes, with a cache.

    enc = Magic141Encoders.from_comfyui_files(text_encoder=..., vision=..., clip_l=..., llama_tokenizer=...,
                                              clip_tokenizer=..., cache_dir="cache/magic141")
    cond = enc.encode("a cat walks on the grass", image)   # image: ComfyUI IMAGE [B, H, W, C] or PIL
    # cond.positive.tokens [B, 146 + 256, 4096], .mask [B, 402], .pooled [B, 768]

Models load lazily on the first cache miss, run on `device`, and go back to the CPU afterwards when
`offload_after_encode` (the 8B LLaVA would otherwise hold the memory the transformer needs next). A host with its
own memory management (ComfyUI) passes `place` instead: it is handed the loaded models before each use, moves them
where they should run and decides itself when to offload them. A re-run with the same prompt and image is answered
from the cache without loading anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from PIL import Image
from torch import nn

from ..runtime.finite import TEXT_ADVICE, check_finite
from ..runtime.text_file import check_text_size
from ..sampling.conditioning import Conditioning, TextConditioning
from . import prompts as recipe
from .cache import EmbeddingCache, cache_key
from .encode import encode_clip, encode_i2v, encode_llm, encode_vlm
from .images import image_hash, to_rgb_images
from .loading import ClipParts, LlavaParts, load_clip, load_llava
from .sources import ClipSource, LlavaSource, check_sources, sources_identity

logger = logging.getLogger(__name__)

# Everything that changes the numbers besides the weights: a change here invalidates old cache entries.
_RECIPE = hashlib.sha256(
    repr((recipe.LLM_TEMPLATE, recipe.VLM_TEMPLATE, recipe.LLM_MAX_PROMPT_TOKENS, recipe.LLM_SKIP_LAYERS,
          recipe.CLIP_MAX_LENGTH, recipe.VLM_IMAGE_STRIDE, "v1")).encode()
).hexdigest()[:16]
_I2V_RECIPE = hashlib.sha256(repr((recipe.I2V_TEMPLATE, recipe.I2V_ASSISTANT_TOKENS)).encode()).hexdigest()[:16]


def _opt_path(p):
    return None if p is None else os.fspath(p)


class Magic141Encoders:
    """The LLM, CLIP-L and VLM encoders of Magic141 with an embedding cache.

    Args:
        llava (LlavaSource): the LLaVA-Llama-3 weights (its Llama-3 is both the LLM and the VLM's language model).
        clip (ClipSource): the CLIP-L text weights.
        device: where the encoders run (default: CUDA if available, else CPU).
        dtype: weight dtype (fp16 as in the reference; fp8 files are converted to it on load).
        output_dtype: dtype of the returned embeddings (the DiT takes fp32 text inputs).
        cache_dir: folder for the on-disk cache (None: memory only).
        cache_items: entries kept in memory (a text entry is ~4 MB, an image entry ~2.4 MB in fp32).
        offload_after_encode: move the encoders back to the CPU after each encode (ignored with `place`).
        place: `place(models)` puts the loaded models ([LLaVA, CLIP-L] nn.Modules) on the device they should run on
            before each use, and owns offloading (ComfyUI's model management). None: `device`, then the CPU.
        int8: quantize the Llama-3 (LLM and VLM language model, 98 % of the weights) to int8 while loading
            (optimum-quanto, paper §3.2): about half the memory. A pre-quantized LLaVA file is int8 regardless.
    """

    def __init__(self, llava: LlavaSource, clip: ClipSource, *, device=None, dtype: torch.dtype = torch.float16,
                 output_dtype: torch.dtype = torch.float32, cache_dir=None, cache_items: int = 32,
                 offload_after_encode: bool = True, int8: bool = False,
                 place: Callable[[list[nn.Module]], None] | None = None):
        check_sources(llava, clip)  # every missing file of both, before anything loads
        self.llava_source, self.clip_source = llava, clip
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype, self.output_dtype = dtype, output_dtype
        self.offload_after_encode = offload_after_encode and place is None
        self.place = place
        self.int8 = int8
        self.identity = (f"{sources_identity(llava, clip, dtype)}-{_RECIPE}-{str(output_dtype).removeprefix('torch.')}"
                         + ("-int8" if int8 else ""))
        self.cache = EmbeddingCache(cache_dir, cache_items)
        self.llava: LlavaParts | None = None
        self.clip: ClipParts | None = None
        self._depth = 0

    @classmethod
    def from_folders(cls, llava_folder, clip_folder, *, llava_tokenizer=None, clip_tokenizer=None, **kwargs):
        """Hugging Face folders: xtuner/llava-llama-3-8b-v1_1-transformers and openai/clip-vit-large-patch14."""
        return cls(LlavaSource(folder=_opt_path(llava_folder), tokenizer=_opt_path(llava_tokenizer)),
                   ClipSource(folder=_opt_path(clip_folder), tokenizer=_opt_path(clip_tokenizer)), **kwargs)

    @classmethod
    def from_comfyui_files(cls, text_encoder, vision, clip_l, llama_tokenizer, clip_tokenizer, **kwargs):
        """ComfyUI's HunyuanVideo files: llava_llama3_*.safetensors, llava_llama3_vision.safetensors, clip_l."""
        return cls(LlavaSource(text_encoder=_opt_path(text_encoder), vision=_opt_path(vision),
                               tokenizer=_opt_path(llama_tokenizer)),
                   ClipSource(file=_opt_path(clip_l), tokenizer=_opt_path(clip_tokenizer)), **kwargs)

    def __repr__(self):
        state = "loaded" if self.loaded else "not loaded"
        return f"Magic141Encoders({self.identity[:12]}, {self.dtype}, {self.device}, {state})"

    # ---------------------------------------------------------------- models
    @property
    def loaded(self) -> bool:
        return self.llava is not None and self.clip is not None

    def load(self) -> "Magic141Encoders":
        if self.llava is None:
            logger.info("loading LLaVA-Llama-3 (%s)", self.dtype)
            self.llava = load_llava(self.llava_source, self.dtype, int8=self.int8)
        if self.clip is None:
            logger.info("loading CLIP-L (%s)", self.dtype)
            self.clip = load_clip(self.clip_source, self.dtype)
        return self

    def models(self) -> list[nn.Module]:
        """The loaded models (LLaVA, CLIP-L); empty before the first encode that needs them."""
        return [parts.model for parts in (self.llava, self.clip) if parts is not None]

    def offload(self, device="cpu"):
        """Move the encoders to `device` (CPU by default) to free the accelerator for the transformer."""
        for parts in (self.llava, self.clip):
            if parts is not None:
                parts.model.to(device)

    def unload(self):
        """Forget the loaded models (the cache stays)."""
        self.llava = self.clip = None

    def _ready(self):
        self.load()
        if self.place is not None:
            self.place(self.models())
        else:
            self.offload(self.device)

    @contextmanager
    def _session(self):
        """Models moved to the device inside stay there until the outermost session ends, then go to the CPU."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self.offload_after_encode and self.device.type != "cpu":
                self.offload("cpu")

    # ---------------------------------------------------------------- encoding
    def encode_text(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LLM tokens [B, 256, C], their mask [B, 256] and CLIP-L pooled [B, P], one row per prompt. A prompt of
        more than `runtime.text_file.MAX_PROMPT_BYTES` characters raises ValueError before anything is tokenized."""
        prompts = [check_text_size(p, "the prompt") for p in ([prompts] if isinstance(prompts, str) else prompts)]
        keys = [cache_key(self.identity, "text", p) for p in prompts]
        entries = {k: self.cache.get(k) for k in dict.fromkeys(keys)}
        todo = [p for p, k in dict(zip(prompts, keys)).items() if entries[k] is None]
        if todo:
            with self._session():
                self._ready()
                tokens, mask = encode_llm(self.llava.model.language_model, self.llava.tokenizer, todo)
                check_finite(tokens, "the LLaVA-Llama-3 text encoder", self.dtype, TEXT_ADVICE)
                pooled = encode_clip(self.clip.model, self.clip.tokenizer, todo)
                check_finite(pooled, "the CLIP-L text encoder", self.dtype, TEXT_ADVICE)
            tokens, pooled = tokens.to("cpu", self.output_dtype), pooled.to("cpu", self.output_dtype)
            mask = mask.to("cpu", torch.long)
            for i, p in enumerate(todo):
                key = cache_key(self.identity, "text", p)
                entries[key] = {"tokens": tokens[i].clone(), "mask": mask[i].clone(), "pooled": pooled[i].clone()}
                self.cache.put(key, entries[key], description=f"text: {p}")
        return tuple(torch.stack([entries[k][name] for k in keys]) for name in ("tokens", "mask", "pooled"))

    def encode_image(self, image) -> torch.Tensor:
        """VLM image tokens [N, 146, C] of the reference image(s) (PIL, or float [H, W, C] / [N, H, W, C])."""
        images = to_rgb_images(image)
        keys = [cache_key(self.identity, "image", image_hash(im)) for im in images]
        entries = {k: self.cache.get(k) for k in dict.fromkeys(keys)}
        todo = {k: im for k, im in zip(keys, images) if entries[k] is None}
        if todo:
            with self._session():
                self._ready()
                tokens = encode_vlm(self.llava.model, self.llava.tokenizer, self.llava.image_processor,
                                    list(todo.values()))
                check_finite(tokens, "the LLaVA vision branch (image tokens)", self.dtype, TEXT_ADVICE)
            for key, t in zip(todo, tokens.to("cpu", self.output_dtype)):
                entries[key] = {"tokens": t.clone()}
                self.cache.put(key, entries[key], description="vlm image tokens")
        return torch.stack([entries[k]["tokens"] for k in keys])

    def encode_i2v(self, prompts: Sequence[str], image, interleave: int) -> TextConditioning:
        """HunyuanVideo-I2V's conditioning of each (prompt, image) pair (`text.encode.encode_i2v`; B prompts and N
        images give max(B, N) samples, one of them may be 1): tokens [B, L, C], mask [B, L], CLIP-L pooled [B, P]."""
        images = to_rgb_images(image)
        if len(images) != len(prompts) and 1 not in (len(images), len(prompts)):
            raise ValueError(f"{len(prompts)} prompts and {len(images)} images: give one of each, or as many prompts "
                             "as images")
        pairs = [(prompts[min(i, len(prompts) - 1)], images[min(i, len(images) - 1)])
                 for i in range(max(len(prompts), len(images)))]
        keys = [cache_key(f"{self.identity}-{_I2V_RECIPE}", f"i2v{interleave}", f"{p}\n{image_hash(im)}")
                for p, im in pairs]
        entries = {k: self.cache.get(k) for k in dict.fromkeys(keys)}
        todo = {k: pair for k, pair in zip(keys, pairs) if entries[k] is None}
        if todo:
            with self._session():
                self._ready()
                texts, pictures = [p for p, _ in todo.values()], [im for _, im in todo.values()]
                tokens, mask = encode_i2v(self.llava.model, self.llava.tokenizer, self.llava.image_processor,
                                          texts, pictures, interleave)
                check_finite(tokens, "the LLaVA-Llama-3 encoder (HunyuanVideo-I2V template)", self.dtype, TEXT_ADVICE)
                pooled = encode_clip(self.clip.model, self.clip.tokenizer, texts)
                check_finite(pooled, "the CLIP-L text encoder", self.dtype, TEXT_ADVICE)
            tokens, pooled = tokens.to("cpu", self.output_dtype), pooled.to("cpu", self.output_dtype)
            for i, key in enumerate(todo):
                entries[key] = {"tokens": tokens[i].clone(), "mask": mask[i].to("cpu", torch.long).clone(),
                                "pooled": pooled[i].clone()}
                self.cache.put(key, entries[key], description=f"i2v text: {todo[key][0]}")
        return TextConditioning(*(torch.stack([entries[k][name] for k in keys]) for name in ("tokens", "mask", "pooled")))

    def encode(self, prompt: str | Sequence[str], image, negative: bool = False,
               negative_prompt: str = recipe.NEGATIVE_PROMPT, template: str = "magic141",
               image_interleave: int = recipe.DEFAULT_INTERLEAVE) -> Conditioning:
        """The sampler's conditioning, encoded with `template` (`prompts.TEMPLATES`):
        - "magic141": text sequence [VLM image tokens ; LLM tokens], mask [ones ; text mask];
        - "hunyuan_i2v": HunyuanVideo-I2V's [image tokens of one LLaVA pass, every `image_interleave`-th ; prompt
          tokens] (`encode_i2v`);
        - "hunyuan_text": the LLM tokens of the prompt alone (SkyReels-V1); the image is not used.

        B prompts and N images give max(B, N) samples (one of them may be 1 and is repeated). With `negative`,
        the negative prompt is encoded too: with the same image tokens for Magic141 (as the official code does for
        real CFG), with a black image for HunyuanVideo-I2V (as diffusers' pipeline does), alone for text only.
        Raises ValueError for an unknown template."""
        if template not in recipe.TEMPLATES:
            raise ValueError(f"unknown prompt template {template!r}; choose one of {', '.join(recipe.TEMPLATES)}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        b = len(prompts)
        with self._session():  # one trip to the device for all the encoders
            if template == "hunyuan_i2v":
                positive = self.encode_i2v(prompts, image, image_interleave)
                neg = None
                if negative:
                    black = [Image.new("RGB", im.size) for im in to_rgb_images(image)[:1]]
                    neg = self.encode_i2v([negative_prompt], black, image_interleave)
            else:
                image_tokens = self.encode_image(image) if template == "magic141" else None  # [N, 146, C]
                tokens, mask, pooled = self.encode_text(prompts + ([negative_prompt] if negative else []))
                positive = _joint(image_tokens, tokens[:b], mask[:b], pooled[:b])
                neg = _joint(image_tokens, tokens[b:], mask[b:], pooled[b:]) if negative else None
        return Conditioning(positive=positive, negative=None if neg is None else neg.repeat_to(positive.batch_size),
                            template=template)


def _joint(image_tokens: torch.Tensor | None, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor):
    """[image tokens ; text tokens] with mask [ones ; text mask], a batch of one repeated to the other's size (the
    text alone without image tokens)."""
    if image_tokens is None:
        return TextConditioning(tokens, mask, pooled.contiguous())
    n, b = image_tokens.shape[0], tokens.shape[0]
    if n != b and 1 not in (n, b):
        raise ValueError(f"{b} prompts and {n} images: give one of each, or as many prompts as images")
    size = max(n, b)
    image_tokens = image_tokens.expand(size, -1, -1)
    tokens, mask, pooled = tokens.expand(size, -1, -1), mask.expand(size, -1), pooled.expand(size, -1)
    image_mask = torch.ones(image_tokens.shape[:2], dtype=mask.dtype)
    return TextConditioning(
        torch.cat([image_tokens, tokens], dim=1),  # [B, 146 + 256, C]
        torch.cat([image_mask, mask], dim=1),  # [B, 402]
        pooled.contiguous(),  # [B, P]
    )


class TemplateEncoders:
    """`encoders` (anything with `encode(prompt, image, negative=..., **options)`) encoding in one prompt template:
    what Long Video and the CLI use, whose template is the model family's (`dit.family.Family.template`). Other
    attributes are the wrapped encoders'."""

    def __init__(self, encoders, template: str, image_interleave: int = recipe.DEFAULT_INTERLEAVE):
        if template not in recipe.TEMPLATES:
            raise ValueError(f"unknown prompt template {template!r}; choose one of {', '.join(recipe.TEMPLATES)}")
        self.encoders, self.template = encoders, template
        self.image_interleave = image_interleave or recipe.DEFAULT_INTERLEAVE

    def encode(self, prompt, image, negative: bool = False, **options) -> Conditioning:
        return self.encoders.encode(prompt, image, negative=negative, template=self.template,
                                    image_interleave=self.image_interleave, **options)

    def __getattr__(self, name):
        return getattr(self.encoders, name)
