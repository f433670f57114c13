"""Magic141 (Magic 1-For-1) image-to-video in plain PyTorch: the DiT, its sampler and safe checkpoint loading.

This package never imports ComfyUI; the ComfyUI nodes in `../nodes` are thin wrappers around it.
"""

from .dit import Magic141DiT
from .dit.config import DiTConfig, full_13b, tiny
from .dit.loading import load_dit, save_dit
from .sampling.conditioning import Conditioning, TextConditioning
from .sampling.noise import make_noise
from .sampling.sampler import latent_frames, latent_shape, sample_latent
from .sampling.schedule import flow_sigmas

__version__ = "0.1.0"


def __getattr__(name):  # the encoders import transformers (seconds); load them only when asked for
    if name == "Magic141Encoders":
        from .text import Magic141Encoders

        return Magic141Encoders
    raise AttributeError(f"module 'magic141_core' has no attribute {name!r}")

__all__ = [
    "Conditioning",
    "DiTConfig",
    "Magic141DiT",
    "Magic141Encoders",
    "TextConditioning",
    "flow_sigmas",
    "full_13b",
    "latent_frames",
    "latent_shape",
    "load_dit",
    "make_noise",
    "sample_latent",
    "save_dit",
    "tiny",
]
