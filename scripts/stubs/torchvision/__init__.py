"""Minimal torchvision stand-in: what ComfyUI (0.3.75 and 0.30) and spandrel import at start-up (see docs/comfyui-host.md).

PyPI's torchvision builds for torch 2.13 are CUDA builds that fail to import beside the CPU torch wheel.
"""

__version__ = "0.0.0+standin"
from . import transforms  # noqa: F401,E402


def __getattr__(name):
    raise AttributeError(f"torchvision stand-in: 'torchvision.{name}' is not available")
