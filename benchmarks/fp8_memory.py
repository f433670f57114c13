"""fp8 checkpoints: file size fp8 / bf16; peak memory while loading an fp8 file (ComfyUI scaled fp8 and the official
`.pt` + `_map.pt`) dequantized into bf16 or int8, divided by the loaded model's weight bytes; and fp8 kept in memory
(the DiT loader's default) against bf16: weight bytes, and peak RAM of the load and of the load plus one forward.

Dequantizing loads convert layer by layer (`weights/fill.py`), so the model in memory is the bf16 or int8 model plus
about one layer: peak = the process's anonymous RSS above its level after imports, as in `int8_memory.py`. Kept fp8
weights stay memory-mapped from the file, so for the fp8 / bf16 rows the peak counts every resident page (VmRSS:
anonymous + file-backed: every weight is touched by the load's finiteness check). The forward's working set (the
largest layer's weight cast to the compute dtype, activations) is the same for both, so that ratio nears the
weights' as the model grows. Each measurement runs in a fresh subprocess.
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


def total_rss() -> int:
    """Resident bytes of this process, anonymous and file-backed (memory-mapped weights once touched)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child(mode: str, path: str):
    """One load in this (fresh) process; prints a JSON line. Modes: "bf16" / "int8" (dequantizing loads, anonymous
    peak), "kept" / "bf16 forward" (a load, then one forward: the peak of every resident page during each)."""
    import torch

    from magic141_core import load_dit
    from magic141_core.weights.int8 import weight_bytes

    if mode in ("kept", "bf16 forward"):
        base = total_rss()
        model, peak, seconds = measure(lambda: load_dit(path, dtype=torch.bfloat16), total_rss)  # fp8 stays fp8
        c, g = model.config, torch.Generator().manual_seed(0)
        args = (torch.randn(1, 16, 1, 8, 8, generator=g), torch.tensor([900.0]), torch.randn(1, 16, c.text_dim,
                generator=g), torch.ones(1, 16), torch.randn(1, c.pooled_dim, generator=g))
        with torch.inference_mode():
            loaded = total_rss() - base
            _, forward_peak, _ = measure(lambda: model(*args, reference=torch.randn(1, 16, 1, 8, 8, generator=g)),
                                         total_rss)
        print(json.dumps({"peak": peak, "forward peak": loaded + forward_peak, "seconds": seconds,
                          "weight_bytes": weight_bytes(model)}))
        return
    model, peak, seconds = measure(lambda: load_dit(path, int8=mode == "int8", keep_fp8=False))
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


def run(size: str) -> dict:
    import torch

    from magic141_core import save_dit, tiny
    from magic141_core.dit.loading import random_dit

    config = tiny(**CONFIGS[size])
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
        bf16 = sub("bf16 forward", bf16_path)
        kept = {name: sub("kept", path) for name, path in [("scaled fp8", comfy_path), ("official fp8", official_path)]}
        report = {
            "bf16 weight GB": rows["bf16", "bf16 file"]["weight_bytes"] / 1e9,
            "scaled fp8 / bf16 file bytes": comfy_path.stat().st_size / bf16_path.stat().st_size,
        }
        for (mode, name), row in rows.items():
            report[f"peak loading {name} as {mode} / {mode} weight bytes"] = row["peak"] / row["weight_bytes"]
        for name, row in kept.items():
            report[f"{name} kept in fp8 / bf16: weight bytes"] = row["weight_bytes"] / bf16["weight_bytes"]
            report[f"{name} kept in fp8 / bf16: peak RAM of the load"] = row["peak"] / bf16["peak"]
            report[f"{name} kept in fp8 / bf16: peak RAM of load + forward"] = (row["forward peak"]
                                                                                 / bf16["forward peak"])
    return report


if __name__ == "__main__":
    main(run, child, "a ~0.2 GB model instead of ~1.7 GB")
