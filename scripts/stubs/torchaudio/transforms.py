"""torchaudio.transforms stand-in (see the package docstring)."""


def __getattr__(name):
    raise AttributeError(f"torchaudio stand-in: 'torchaudio.transforms.{name}' is not available")
