"""torchvision.transforms.v2.functional stand-in (see the package docstring)."""


def __getattr__(name):
    raise AttributeError(f"torchvision stand-in: 'torchvision.transforms.v2.functional.{name}' is not available")
