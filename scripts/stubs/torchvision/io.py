"""torchvision.io stand-in: transformers 5 imports it once it finds a torchvision; never called by the pack."""


def __getattr__(name):
    raise AttributeError(f"torchvision stand-in: 'torchvision.io.{name}' is not available")
