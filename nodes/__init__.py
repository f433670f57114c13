"""ComfyUI nodes of the pack, gathered from one module per stage."""

from . import decode, encode, loaders, long_video, priors, report, sample, save

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in (loaders, encode, priors, sample, decode, long_video, report, save):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
