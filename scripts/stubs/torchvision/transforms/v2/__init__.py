"""torchvision.transforms.v2 stand-in: transformers 5 imports `v2.functional` once it finds a torchvision; the pack
uses transformers' PIL image processors, so nothing here is ever called."""
from . import functional  # noqa: F401
