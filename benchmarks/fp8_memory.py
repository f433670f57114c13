"""fp8 checkpoints: file size fp8 / bf16, and peak memory while loading an fp8 file (ComfyUI scaled fp8 and the
official `.pt` + `_map.pt`) into bf16 or int8, divided by the loaded model's weight bytes.

The pack dequantizes fp8 layer by layer while loading (`checkpoints/fp8.py`), so the model in memory is the bf16 or
int8 model; these ratios show the load never holds more than that model plus about one layer. Peak memory is the
process's anonymous RSS above its level after imports, as in `int8_memory.py`, each load in a fresh subprocess.
Run:  python benchmarks/fp8_memory.py [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from int8_memory import CONFIGS, main, measure  # noqa: E402


def child(mode: str, path: str):
    """One load in this (fresh) process; prints a JSON line."""
    from magic141_core import load_dit
    from magic141_core.weights.int8 import weight_bytes

    model, peak, seconds = measure(lambda: load_dit(path, int8=mode == "int8"))
    print(json.dumps({"peak": peak, "seconds": seconds, "weight_bytes": weight_bytes(model)}))


def write_fp8(sd: dict, folder: Path) -> tuple[Path, Path]:
    """`sd` as a ComfyUI scaled-fp8 safetensors (every linear) and as the official fp8 .pt (block linears) + map."""
    import torch
    from safetensors.torch import save_file

    from magic141_core.weights.fp8 import map_path, quantize_scaled

    comfy, official, scales = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}, {}
    for key, tensor in sd.items():
        linear = key.endswith(".weight") and tensor.ndim == 2
        if linear:
            comfy[key], comfy[key.removesuffix("weight") + "scale_weight"] = quantize_scaled(tensor)
        else:
            comfy[key] = tensor
        if linear and key.startswith(("double_blocks.", "single_blocks.")):
            official[key], scales[key.removesuffix(".weight")] = quantize_scaled(tensor)
        else:
            official[key] = tensor
    comfy_path, official_path = folder / "fp8_scaled.safetensors", folder / "mp_rank_00_model_states_fp8.pt"
    save_file(comfy, comfy_path)
    torch.save({"module": official}, official_path)
    torch.save(scales, map_path(official_path))
    return comfy_path, official_path


def run(quick: bool) -> dict:
    import torch

    from magic141_core import save_dit, tiny
    from magic141_core.dit.loading import random_dit

    config = tiny(**CONFIGS["quick" if quick else "full"])
    with tempfile.TemporaryDirectory() as tmp:
        bf16_path = Path(tmp) / "bf16.safetensors"
        model = random_dit(config, seed=0, dtype=torch.bfloat16)
        save_dit(model, bf16_path)
        comfy_path, official_path = write_fp8(model.state_dict(), Path(tmp))
        del model

        def sub(mode, path):
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True,
                                 text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])

        rows = {(mode, name): sub(mode, path) for name, path in [("bf16 file", bf16_path), ("scaled fp8", comfy_path),
                                                                  ("official fp8", official_path)]
                for mode in ("bf16", "int8")}
        report = {
            "bf16 weight GB": rows["bf16", "bf16 file"]["weight_bytes"] / 1e9,
            "scaled fp8 / bf16 file bytes": comfy_path.stat().st_size / bf16_path.stat().st_size,
        }
        for (mode, name), row in rows.items():
            report[f"peak loading {name} as {mode} / {mode} weight bytes"] = row["peak"] / row["weight_bytes"]
    return report


if __name__ == "__main__":
    main(run, child, "a ~0.2 GB model instead of ~1.7 GB")
