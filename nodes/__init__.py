"""ComfyUI nodes of the pack, gathered from one module per stage.

A module in the V3 schema (`io.ComfyNode`, see docs/design.md "Node schema") lists its nodes in `NODES`; a module
not yet converted (long_video, priors, report) still has V1 `NODE_CLASS_MAPPINGS`. ComfyUI registers a pack ONE way: a
module with NODE_CLASS_MAPPINGS never has its `comfy_entrypoint` called, and V3 classes register through
NODE_CLASS_MAPPINGS exactly as through an extension (the executor and /object_info look at the class, not at how it
was registered). So while any module is V1 the pack exposes NODE_CLASS_MAPPINGS only; `extension()` is the
ComfyExtension the root's `comfy_entrypoint` returns once every module is V3 (the same classes, nothing else)."""

from . import decode, encode, loaders, long_video, priors, report, sample, save
from .host.schema import ComfyExtension

MODULES = (loaders, encode, priors, sample, decode, long_video, report, save)  # the order nodes appear in the add-node menu

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in MODULES:
    for _node in getattr(_module, "NODES", ()):
        _schema = _node.GET_SCHEMA()
        NODE_CLASS_MAPPINGS[_schema.node_id] = _node
        NODE_DISPLAY_NAME_MAPPINGS[_schema.node_id] = _schema.display_name
    NODE_CLASS_MAPPINGS.update(getattr(_module, "NODE_CLASS_MAPPINGS", {}))
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_module, "NODE_DISPLAY_NAME_MAPPINGS", {}))


class Magic141Extension(ComfyExtension):
    """The pack as one V3 extension: every node, V3 modules only (see the module docstring)."""

    async def get_node_list(self) -> list[type]:
        legacy = [module.__name__ for module in MODULES if not hasattr(module, "NODES")]
        if legacy:
            raise TypeError(f"{', '.join(legacy)} still declare V1 nodes; register the pack by NODE_CLASS_MAPPINGS")
        return [node for module in MODULES for node in module.NODES]
