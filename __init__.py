"""Magic141 for ComfyUI: image-to-video with Magic 1-For-1 (ComfyUI loads this folder from custom_nodes/)."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"  # the Templates browser cards' descriptions (web/templates.js)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
