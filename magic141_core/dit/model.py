"""The Magic141 image-to-video DiT (HunyuanVideo-13B architecture) and its sibling families: one implementation,
the way the start image enters set by `DiTConfig.image_condition` (concat + mask 33 channels, concat 32, token
replace 16; see `dit/family.py`).

Attribute names are the official checkpoint keys (`img_in`, `txt_in`, `time_in`, `vector_in`, `guidance_in`,
`text_guidance_in`, `double_blocks`, `single_blocks`, `final_layer`), so an official state dict loads with
`strict=True` and no rename table. References: Magic 1-For-1 (arXiv 2502.07701), HunyuanVideo (arXiv 2412.03603),
diffusers' `HunyuanVideoTransformer3DModel(image_condition_type="latent_concat")`, which this matches numerically.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..runtime.device import RANGE_SAFE, compute_dtype_for, safe_dtype
from ..runtime.interrupt import check_interrupt
from .attention import rope_table, sequence_shard, text_key_mask
from .blocks import DoubleStreamBlock, FinalLayer, SingleStreamBlock
from .config import LATENT_CHANNELS, DiTConfig
from .family import default_family
from .hooks import add_control, check_options, run_double, run_single
from .layers import CoreOps, MLPEmbedder, PatchEmbed, TimestepEmbedder
from .refiner import TokenRefiner


class Magic141DiT(nn.Module):
    """Velocity model v(x_t, t | reference latent, [VLM image tokens ; LLM tokens], CLIP pooled).

    `family` (`dit.family.Family`) says which public weights these are (set by `load_dit`; default from the
    config); the math depends only on `config.image_condition`.

    `apply_text_guidance`: Magic141's `text_guidance_in` exists in its checkpoint but the official forward never
    uses it (model.md); set this to True only for a checkpoint trained to use it. HunyuanVideo's `guidance_in` is
    always applied. `compute_dtype`: None picks the dtype per device (`device.compute_dtype_for`); it is never fp16,
    whose range (65504) the 13B model's activations (~1e5) exceed: fp16 weights or a requested fp16 compute run in
    bf16 where the device has it natively, else in fp32 (`runtime.device.RANGE_SAFE`, as ComfyUI runs HunyuanVideo).
    `parallel`: a `parallel.SequenceParallel` (set by its `attach`) splits the video tokens across ranks; None on one
    process.

    `operations`: the layer factory every weight layer is built from (`layers.CoreOps`, plain torch, by default;
    inside ComfyUI the host passes `comfy.ops` classes, so ComfyUI's partial loading and casting reach each layer).
    """

    def __init__(self, config: DiTConfig, operations=CoreOps):
        super().__init__()
        self.config = config
        self.apply_text_guidance = False
        self.compute_dtype: torch.dtype | None = None
        self.parallel = None
        self.family = default_family(config)
        d, ops = config.hidden_size, operations
        self.img_in = PatchEmbed(config.patch_size, config.in_channels, d, ops)
        self.txt_in = TokenRefiner(config.text_dim, d, config.num_heads, config.refiner_blocks, config.mlp_ratio, ops)
        self.time_in = TimestepEmbedder(d, operations=ops)
        self.vector_in = MLPEmbedder(config.pooled_dim, d, ops)
        self.guidance_in = TimestepEmbedder(d, operations=ops) if config.guidance_embed else None
        self.text_guidance_in = TimestepEmbedder(d, operations=ops) if config.text_guidance_embed else None
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(d, config.num_heads, config.mlp_ratio, ops) for _ in range(config.double_blocks)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(d, config.num_heads, config.mlp_ratio, ops) for _ in range(config.single_blocks)
        )
        self.final_layer = FinalLayer(d, math.prod(config.patch_size), config.out_channels, ops)

    @property
    def activation_dtype(self) -> torch.dtype:
        """The dtype this forward computes in on the weights' device: bf16 or fp32, never fp16 (see the class)."""
        weight = self.img_in.proj.weight
        if self.compute_dtype is not None:
            return safe_dtype(weight.device, self.compute_dtype, RANGE_SAFE)
        return compute_dtype_for(weight.device, weight.dtype, RANGE_SAFE)

    @property
    def guidance_embedder(self) -> TimestepEmbedder | None:
        """The embedder that receives the guidance scale, or None (then guidance > 1 means real CFG)."""
        if self.guidance_in is not None:
            return self.guidance_in
        return self.text_guidance_in if self.apply_text_guidance else None

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        txt: torch.Tensor,
        txt_mask: torch.Tensor,
        pooled: torch.Tensor,
        reference: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        control: dict | None = None,
        transformer_options: dict | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity.

        Args:
            x: [B, 16, T, H, W] noisy latent (VAE latent x scaling factor).
            t: [B] timesteps in [0, 1000] (sigma x 1000).
            txt: [B, L, text_dim] text sequence (e.g. [VLM image tokens ; LLM tokens]), right-padded.
            txt_mask: [B, L] 1 for tokens, 0 for padding.
            pooled: [B, pooled_dim] CLIP-L pooled text embedding.
            reference: [B or 1, 16, T_ref, H, W] start latent (T_ref >= 1 latent frames: the start image, or
                several frames of motion context); every family but text-to-video needs it. Concat families put
                it in the first T_ref frames of the extra channels; token replace makes those frames of x the
                reference itself.
            guidance: [B] guidance scale, embedded as scale x 1000 when the model has a guidance embedder.
            control: a ControlNet's residuals {"input": per double block, "output": per single block} ([B, Li, D]
                each, added to the video tokens), as ComfyUI passes them; None: none.
            transformer_options: a host's per-forward options (ComfyUI's dict: block replacements, attention-output
                patches, what an attention override reads); see `dit.hooks`. None or {}: the plain forward.
        Returns:
            velocity [B, 16, T, H, W] in the compute dtype (`activation_dtype`); under token replace the first T_ref
            frames' velocity is 0 (they stay the clean reference, as the references step only the other frames).
        Raises ValueError naming a shape or input problem, or an option this DiT cannot apply (`hooks.check_options`).
        """
        cfg = self.config
        options = dict(transformer_options or {})  # a copy: the per-block entries below are this forward's
        replace = check_options(options, len(self.double_blocks), len(self.single_blocks))
        dtype = self.activation_dtype
        x = self._input(x, reference).to(dtype)
        _, _, T, H, W = x.shape
        grid = (T // cfg.patch_size[0], H // cfg.patch_size[1], W // cfg.patch_size[2])
        replaced = reference.shape[2] if cfg.image_condition == "token_replace" else 0  # latent frames held clean
        if replaced % cfg.patch_size[0]:
            raise ValueError(f"token replace needs whole temporal patches; {replaced} reference frames with a "
                             f"temporal patch of {cfg.patch_size[0]}")

        # 1. Text: drop the padding tail no sample uses (exact: padding is masked out of every attention)
        num_valid = txt_mask.sum(dim=1)  # [B]
        if bool((num_valid == 0).any()):
            raise ValueError("a text mask has no tokens; every sample needs at least one text or image token")
        txt_len = int(num_valid.max())
        txt, txt_mask = txt[:, :txt_len].to(dtype), txt_mask[:, :txt_len]

        # 2. One conditioning vector drives every modulation
        t = t.to(x.device)
        text_vec = self.vector_in(pooled.to(dtype))  # [B, D]
        vec = self.time_in(t, dtype) + text_vec  # [B, D]
        if self.guidance_embedder is not None:
            if guidance is None:
                raise ValueError("this checkpoint embeds the guidance scale; pass guidance (e.g. 1.0)")
            vec = vec + self.guidance_embedder(guidance.to(x.device) * 1000.0, dtype)
        block_vec = vec
        if replaced:  # the reference frames' tokens at timestep 0, without guidance (official `token_replace_vec`)
            block_vec = torch.stack([self.time_in(torch.zeros_like(t), dtype) + text_vec, vec], dim=1)  # [B, 2, D]

        # 3. Tokens: video patches [B, Li, D]; text refined to D [B, Lt, D]
        img = self.img_in(x)
        txt = self.txt_in(txt, t, txt_mask, text_key_mask(num_valid, 0, txt_len), options)
        img_len = img.shape[1]
        first = replaced // cfg.patch_size[0] * grid[1] * grid[2]  # leading video tokens of the reference frames
        key_mask = text_key_mask(num_valid, img_len, txt_len)  # [B, 1, 1, Li + Lt] or None
        rope = rope_table(grid, txt_len, cfg.rope_axes, cfg.rope_theta, x.device)
        shard = None
        if self.parallel is not None:  # sequence parallel: this rank keeps 1/N of the video tokens (parallel.py)
            shard = self.parallel.shard(img_len, txt_len, cfg.num_heads)
            img, rope, key_mask = shard.split(img), shard.split_rope(rope), shard.key_mask(num_valid)
            img_len, first = img.shape[1], shard.leading(first)  # [B, Li/N, D]; this rank's share of `first`
            if control is not None:
                raise ValueError("ControlNet residuals cannot be added under sequence parallelism; run on one process")

        # 4. Dual-stream blocks, then single-stream blocks on the joint sequence (block replacements, per-block
        #    options and ControlNet residuals where ComfyUI's HunyuanVideo applies them: `dit.hooks`)
        with sequence_shard(shard):  # under sequence parallel, attention() runs the Ulysses all-to-alls
            options.update(total_blocks=len(self.double_blocks), block_type="double")
            for i, block in enumerate(self.double_blocks):
                check_interrupt()  # a cancel lands between blocks (and inside CPU attention), not only between steps
                options["block_index"] = i
                img, txt = run_double(block, replace, img, txt, block_vec, rope, key_mask, first, options)
                img = add_control(img, control, "input", i)
            joint = torch.cat([img, txt], dim=1)  # [B, Li + Lt, D]
            options.update(total_blocks=len(self.single_blocks), block_type="single", img_slice=[0, img_len])
            for i, block in enumerate(self.single_blocks):
                check_interrupt()
                options["block_index"] = i
                joint = run_single(block, replace, joint, block_vec, rope, key_mask, first, options)
                joint = add_control(joint, control, "output", i)

        # 5. Output projection and unpatchify
        out = self.final_layer(joint[:, :img_len], vec)  # [B, Li, pt*ph*pw*16]
        if shard is not None:
            out = shard.gather(out)  # every rank's tokens, on every rank: [B, Li, pt*ph*pw*16]
        pt, ph, pw = cfg.patch_size
        velocity = rearrange(
            out, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", t=grid[0], h=grid[1], pt=pt, ph=ph, pw=pw
        )
        if replaced:
            velocity[:, :, :replaced] = 0  # the reference frames are not denoised: the references discard this
        return velocity

    def _input(self, x: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """The model input for this family (`image_to_video_input`). A concat input that already has all
        `in_channels` (33 or 32: built by ComfyUI's `concat_cond` when a native sampler drives this model) is taken
        as it is."""
        cfg = self.config
        if (cfg.in_channels != LATENT_CHANNELS and reference is None and x.ndim == 5
                and x.shape[1] == cfg.in_channels):
            return x
        return image_to_video_input(x, reference, cfg.image_condition, cfg.patch_size)


def image_to_video_input(x: torch.Tensor, reference: torch.Tensor | None, image_condition: str = "concat_mask",
                         patch_size: tuple[int, int, int] = (1, 2, 2)) -> torch.Tensor:
    """The DiT input of each family (`dit.config.IMAGE_CONDITIONS`) from the noisy latent and the start latent.

    x: [B, 16, T, H, W] noisy latent (scaled); reference: [B or 1, 16, T_ref, H, W] start latent (scaled),
    1 <= T_ref <= T. Returns, in x's dtype:
    - concat_mask: [B, 33, T, H, W] = [noisy ; reference zero-padded in time ; 1 on the reference frames] (official
      Magic141 / HunyuanVideo-I2V v1; ComfyUI's `HunyuanImageToVideo` v1 builds the same);
    - concat: [B, 32, T, H, W] = [noisy ; reference zero-padded in time] (SkyReels-V1; ComfyUI's
      `HunyuanVideoSkyreelsI2V`);
    - token_replace: [B, 16, T, H, W] = x with its first T_ref frames replaced by the clean reference (diffusers'
      `token_replace`; ComfyUI's v2 noise mask);
    - none (text-to-video): x itself; a reference is refused.
    Raises ValueError naming the shape problem."""
    if x.ndim != 5 or x.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"x must be a latent [B, {LATENT_CHANNELS}, T, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point() or (reference is not None and not reference.is_floating_point()):
        raise ValueError(f"latents must be floating point, got {x.dtype}"
                         + ("" if reference is None else f" and {reference.dtype}"))
    B, _, T, H, W = x.shape
    if T % patch_size[0] or H % patch_size[1] or W % patch_size[2]:
        raise ValueError(
            f"latent size (T, H, W) = {(T, H, W)} must be divisible by the patch size {patch_size}; "
            "use a video height and width that are multiples of 16"
        )
    if image_condition == "none":
        if reference is not None:
            raise ValueError("this is a text-to-video checkpoint (16 input channels); it takes no reference")
        return x
    if reference is None:
        raise ValueError("this image-to-video checkpoint needs the reference latent of the start image")
    if reference.ndim != 5 or reference.shape[1] != LATENT_CHANNELS or reference.shape[3:] != x.shape[3:]:
        raise ValueError(
            f"reference latent must be [B, {LATENT_CHANNELS}, T_ref, {H}, {W}] like the video latent, "
            f"got {tuple(reference.shape)}"
        )
    ref_frames = reference.shape[2]
    if reference.shape[0] not in (1, B):
        raise ValueError(f"reference batch {reference.shape[0]} does not match the latent batch {B}")
    if not 1 <= ref_frames <= T:
        raise ValueError(f"reference has {ref_frames} latent frames; it needs 1 to the video's {T}")
    reference = reference.to(x).expand(B, -1, -1, -1, -1)
    if image_condition == "token_replace":
        return torch.cat([reference, x[:, :, ref_frames:]], dim=2)  # [B, 16, T, H, W]
    padded = F.pad(reference, (0, 0, 0, 0, 0, T - ref_frames))  # zeros after the reference frames
    if image_condition == "concat":
        return torch.cat([x, padded], dim=1)  # [B, 32, T, H, W]
    mask = torch.zeros(B, 1, T, H, W, dtype=x.dtype, device=x.device)
    mask[:, :, :ref_frames] = 1.0
    return torch.cat([x, padded, mask], dim=1)  # [B, 33, T, H, W]
