"""torchaudio stand-in for the CPU test host: PyPI's newest torchaudio (2.11) does not load beside torch 2.13, and
ComfyUI 0.30 imports `torchaudio.functional` at start-up (Gemma-4, LTX audio VAE). Audio is not part of Magic141;
any use of these modules fails loudly."""

__version__ = "0.0.0+standin"
from . import functional, transforms  # noqa: F401,E402


def __getattr__(name):
    raise AttributeError(f"torchaudio stand-in: 'torchaudio.{name}' is not available")
