"""The nodes in ComfyUI's V3 schema keep what saved workflows rely on: node IDs, input names, their order and
sections (widget values are saved by position), types, defaults and ranges, output types, names and order, as the
release before V3 declared them (tests/fixtures/node_schema_v1.json, written from that release's V1 classes); and
the pack registers one way only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.compat  # the schema as each host builds it (0.3.75's V3 lacks some arguments)

FIXTURE = Path(__file__).parent / "fixtures" / "node_schema_v1.json"
FILE_LISTS = {"model_name", "llava", "llava_vision", "clip_l", "clip_model", "folder"}  # the files in the folders
# what a V3 input states that a V1 input left to the frontend's default
V3_FRONTEND_DEFAULTS = {"multiline": False, "multiselect": False}


def declared(name: str, cls) -> dict:
    """A node as the fixture records it, from what ComfyUI serves (/object_info: `INPUT_TYPES`, `RETURN_TYPES`)."""
    info = {"display_name": None, "category": cls.CATEGORY, "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
            "output": list(cls.RETURN_TYPES), "output_name": list(getattr(cls, "RETURN_NAMES", None)
                                                                   or cls.RETURN_TYPES), "input": {}}
    for section, entries in cls.INPUT_TYPES().items():
        if section == "hidden":
            info["input"][section] = sorted(entries)
            continue
        rows = []
        for key, (kind, *rest) in entries.items():
            options = dict(rest[0]) if rest else {}
            options.pop("tooltip", None)
            choices = options.pop("options", None) if kind == "COMBO" else (kind if isinstance(kind, list) else None)
            kind = "COMBO" if isinstance(kind, list) else kind
            options = {k: v for k, v in options.items() if V3_FRONTEND_DEFAULTS.get(k, object()) != v}
            rows.append([key, kind, None if key in FILE_LISTS else choices, options])
        info["input"][section] = rows
    return json.loads(json.dumps(info))


def test_every_node_declares_what_the_release_before_v3_declared(pack):
    before = json.loads(FIXTURE.read_text())
    assert set(pack.NODE_CLASS_MAPPINGS) == set(before), "node IDs changed"
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        now = declared(name, cls)
        now["display_name"] = pack.NODE_DISPLAY_NAME_MAPPINGS[name]
        was = before[name]
        for section in ("required", "optional"):  # order matters: widgets_values are saved by position
            assert [row[0] for row in now["input"].get(section, [])] == \
                [row[0] for row in was["input"].get(section, [])], f"{name} {section} inputs"
        # a V3 output node also gets the prompt and workflow (ComfyUI adds them); none is ever taken away
        assert set(was["input"].pop("hidden", [])) <= set(now["input"].pop("hidden", [])), name
        assert now == was, name


def test_every_node_is_v3_and_the_pack_registers_one_way(pack):
    from comfy_api.internal import _ComfyNodeInternal

    for module in pack.nodes.MODULES:
        short = module.__name__.rsplit(".", 1)[-1]
        assert not hasattr(module, "NODE_CLASS_MAPPINGS"), short  # no V1 registration left in a node module
        assert module.NODES and all(issubclass(node, _ComfyNodeInternal) for node in module.NODES), short
    # ComfyUI reads NODE_CLASS_MAPPINGS first and then never calls comfy_entrypoint: the pack offers exactly one
    assert hasattr(pack, "NODE_CLASS_MAPPINGS") and not hasattr(pack, "comfy_entrypoint")
    assert set(pack.NODE_CLASS_MAPPINGS) == {node.GET_SCHEMA().node_id for m in pack.nodes.MODULES for node in m.NODES}


def test_an_unknown_combo_value_is_refused_by_name_on_every_host(pack):
    """0.3.75 never validates a V3 combo's value before the node runs; the node refuses it itself."""
    from conftest import run_node

    with pytest.raises(ValueError, match="Magic141 Encoder Loader: dtype 'fp64' is not one of"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141EncoderLoader"], llava="x", llava_vision="y", clip_l="z",
                 dtype="fp64")
