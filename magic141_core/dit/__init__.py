"""The Magic141 / HunyuanVideo diffusion transformer."""

from .model import Magic141DiT

__all__ = ["Magic141DiT"]
