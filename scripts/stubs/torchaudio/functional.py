"""torchaudio.functional stand-in (see the package docstring)."""


def __getattr__(name):
    raise AttributeError(f"torchaudio stand-in: 'torchaudio.functional.{name}' is not available")
