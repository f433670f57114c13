"""Import the real upstream ComfyUI (installed by scripts/setup_comfyui.sh into .host/) in this process, and load
this pack the way ComfyUI does: as a package from its folder, so its relative imports resolve."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOST = Path(os.environ.get("MAGIC141_HOST", REPO / ".host"))
COMFYUI = HOST / "ComfyUI"
STUBS = HOST / "stubs"
PACK_NAME = "Magic141"


def require_host():
    if not (COMFYUI / "main.py").is_file():
        pytest.fail(f"upstream ComfyUI is not installed at {COMFYUI}; run scripts/setup_comfyui.sh (./scripts/test.sh "
                    "does it for you)")


def import_comfy(base: Path):
    """Import ComfyUI on the CPU with every user folder under `base`, laid out exactly as `main.py --base-directory
    base` lays it out: ComfyUI's own folder lists, rebased (so `diffusion_models` is [models/unet,
    models/diffusion_models] and `text_encoders` is [models/text_encoders, models/clip], as users have them)."""
    require_host()
    for path in (str(STUBS), str(COMFYUI)):
        if path not in sys.path:
            sys.path.insert(0, path)
    from comfy.cli_args import args

    args.cpu = True  # must precede comfy.model_management on a CPU-only torch
    import folder_paths

    old, new = folder_paths.models_dir, str(base / "models")
    for paths, *_ in folder_paths.folder_names_and_paths.values():
        paths[:] = [new + p[len(old):] if p == old or p.startswith(old + os.sep) else p for p in paths]
    folder_paths.models_dir = new
    getattr(folder_paths, "filename_list_cache", {}).clear()
    for sub in ("output", "input", "temp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_temp_directory(str(base / "temp"))
    for folder in ("diffusion_models", "vae", "text_encoders", "clip_vision", "checkpoints"):
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
    return folder_paths


def load_pack():
    """This repository as the package ComfyUI would import from custom_nodes/ (name: PACK_NAME)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module
