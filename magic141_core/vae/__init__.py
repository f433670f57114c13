"""The HunyuanVideo causal 3-D VAE: load it, encode images and clips, decode latents tiled and streamed.

    vae = load_vae("models/vae/hunyuan_video_vae_bf16.safetensors")
    reference = scale_latent(vae.encode(image).sample(seed))                                 # what the DiT sees
    for frames in vae.decode_stream(unscale_latent(latent)):                                  # [B, 3, f, H, W] in 0..1
        writer.append(frames)
"""

from .config import VAEConfig, hunyuan_video_vae, tiny_vae
from .latent import SCALING_FACTOR, LatentDistribution, scale_latent, unscale_latent
from .loading import build_vae, load_vae, random_vae, save_vae, vae_state_dict_from_file
from .model import HunyuanVideoVAE
from .shapes import latent_frames, pixel_frames
from .tiling import Tiling, estimate_bytes, plan_tiling

__all__ = [
    "SCALING_FACTOR",
    "HunyuanVideoVAE",
    "LatentDistribution",
    "Tiling",
    "VAEConfig",
    "build_vae",
    "estimate_bytes",
    "hunyuan_video_vae",
    "latent_frames",
    "load_vae",
    "pixel_frames",
    "plan_tiling",
    "random_vae",
    "save_vae",
    "scale_latent",
    "tiny_vae",
    "unscale_latent",
    "vae_state_dict_from_file",
]
