"""ComfyUI nodes of the pack, gathered from one module per stage.

Every node is in ComfyUI's V3 schema (`io.ComfyNode`, see docs/design.md "Node schema"); each module lists its nodes
in `NODES`. The pack registers ONE way, by `NODE_CLASS_MAPPINGS` (the root `__init__.py`): ComfyUI registers V3
classes through it exactly as through a `comfy_entrypoint` extension (the executor and /object_info look at the
class), on 0.30.0 and 0.3.75 alike, and a module with NODE_CLASS_MAPPINGS never has its comfy_entrypoint called, so
the pack offers no entrypoint."""

from . import decode, encode, loaders, long_video, priors, report, sample, save

MODULES = (loaders, encode, priors, sample, decode, long_video, report, save)  # the add-node menu's order

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in MODULES:
    for _node in _module.NODES:
        _schema = _node.GET_SCHEMA()
        NODE_CLASS_MAPPINGS[_schema.node_id] = _node
        NODE_DISPLAY_NAME_MAPPINGS[_schema.node_id] = _schema.display_name
