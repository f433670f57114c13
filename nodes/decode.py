"""Magic141 VAE Decode: the native HunyuanVideo VAE (Load VAE) decoded by the core's causal streaming decode, with
ComfyUI's progress bar and Cancel between chunks, tiles and inside large convolutions."""

from __future__ import annotations

import weakref

from ..magic141_core.vae import Tiling
from ..magic141_core.vae.loading import vae_from_state_dict
from ..magic141_core.vae.shapes import SPATIAL_COMPRESSION
from ..magic141_core.weights import CheckpointError
from . import inputs
from .common import CATEGORY
from .host import memory, progress
from .host.schema import io

MIN_TILE_PX = 64  # 8 latent pixels: below this, tile borders dominate (tiling.MIN_TILE)
_CORE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # native VAE object -> (our VAE, its placement)


def core_vae(vae, node: str):
    """Our `HunyuanVideoVAE` on the weights of ComfyUI's VAE `vae` (its `first_stage_model`, LDM layout, mapped by
    `vae.keys.from_comfy_layout`), built once per VAE object (its tensors shared, not copied), handed to ComfyUI's
    memory management and loaded to the compute device. Another kind of VAE (SD, Flux, HunyuanVideo 1.5) gets a
    ValueError naming `node` and the file to load instead."""
    entry = _CORE.get(vae)
    if entry is None:
        get_sd = getattr(vae, "get_sd", None)
        if get_sd is None:
            raise ValueError(f"{node}: the vae input is a {type(vae).__name__}, not a VAE; connect Load VAE")
        sd = {k: v.to("cpu") for k, v in get_sd().items()}
        try:
            model = vae_from_state_dict(sd, "the connected VAE")
        except CheckpointError:
            kind = "a video" if getattr(vae, "latent_dim", 2) == 3 else "an image"
            raise ValueError(f"{node} needs the HunyuanVideo VAE (hunyuan_video_vae_bf16.safetensors in models/vae, "
                             f"through Load VAE); the connected one is {kind} VAE of another model "
                             f"({getattr(vae, 'latent_channels', '?')} latent channels). Load the HunyuanVideo VAE, "
                             "or decode this latent with native VAE Decode") from None
        entry = _CORE[vae] = (model, memory.ManagedPlacement(text_encoder=False))
    model, place = entry
    place([model])  # to the compute device, other models offloaded to make room
    return model


def tiling_for(tile_size: int) -> Tiling | None:
    """The split of a decode: None (planned from the free memory: the whole frame if it fits, else smaller tiles)
    for `tile_size` 0, else square spatial tiles of `tile_size` px (32 px cross-faded overlap), 4 latent frames
    per chunk. ValueError for a size between 1 and 63 or not a multiple of 8."""
    if tile_size == 0:
        return None
    if tile_size < MIN_TILE_PX or tile_size % SPATIAL_COMPRESSION:
        raise ValueError(f"tile_size must be 0 (automatic) or a multiple of 8 of at least {MIN_TILE_PX} px, got "
                         f"{tile_size}")
    tile = tile_size // SPATIAL_COMPRESSION
    return Tiling(tile_height=tile, tile_width=tile)


class Magic141VAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141VAEDecode",
            display_name="Magic141 VAE Decode",
            category=CATEGORY,
            description="Decodes a HunyuanVideo latent with the native VAE's weights (from Load VAE) by Magic141's "
                        "causal streaming decode: temporal chunks carry every convolution's state, so the clip is "
                        "never cut in time (no seam), memory stays flat in the clip's length, and the progress bar "
                        "moves per chunk and tile. Cancel stops it within seconds. Frames differ from a one-pass "
                        "decode only by GroupNorm's running statistics (see docs/vae.md).",
            inputs=[
                io.Latent.Input("samples", tooltip="The video latent (from Magic141 Sampler or a native sampler)."),
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE (native Load VAE)."),
                io.Int.Input("tile_size", default=0, min=0, max=8192, step=32,
                             tooltip="0: automatic (the whole frame when it fits in free memory, else smaller "
                                     "tiles). Otherwise square spatial tiles of this many pixels (cross-faded over "
                                     "32 px), for less memory."),
            ],
            outputs=[io.Image.Output(tooltip="The decoded frames (a batch of images, in order).")],
        )

    @classmethod
    def execute(cls, samples, vae, tile_size=0) -> io.NodeOutput:
        node = "Magic141 VAE Decode"
        tiling = tiling_for(tile_size)
        latent = inputs.video_latent(samples, node, "decode image latents with native VAE Decode; this node takes "
                                     "the latent of Magic141 Sampler, or of KSampler on a HunyuanVideo model")
        model = core_vae(vae, node)
        frames = model.decode(latent.float(), tiling, callback=progress.progress_callback(),
                              output_device=memory.intermediate_device())  # [B, 3, F, H, W] in [0, 1]
        return io.NodeOutput(frames.movedim(1, -1).reshape(-1, *frames.shape[-2:], 3))


NODES = [Magic141VAEDecode]
