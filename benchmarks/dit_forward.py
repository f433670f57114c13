"""DiT forward time and accuracy: ours vs diffusers' HunyuanVideoTransformer3DModel (and ComfyUI's native
HunyuanVideo model when ComfyUI is found: MAGIC141_COMFYUI or .host/ComfyUI), on the same weights and inputs.

Like with like: for each weight dtype (fp32, bf16) every side is listed with the dtype it COMPUTES in, its median
seconds per forward (the sides timed in interleaved rounds after a warm-up, so a burst of load elsewhere hits all of
them alike) and its max |difference| to the fp32 reference (ours with fp32 weights). With bf16 weights on a CPU
without bf16 units ours computes in fp32 (device.py); diffusers is then timed twice: computing in fp32 from the
same bf16-rounded weights (the like-with-like ratio) and computing in bf16 as it does by default.
Run:  python benchmarks/dit_forward.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_models import comfy_dit, comfyui_root, diffusers_dit  # noqa: E402

from magic141_core import tiny  # noqa: E402
from magic141_core.dit.loading import random_dit  # noqa: E402
from magic141_core.runtime.device import compute_dtype_for  # noqa: E402
from magic141_core.dit.loading import build_dit  # noqa: E402

CONFIG = dict(hidden_size=1024, num_heads=8, double_blocks=2, single_blocks=4, refiner_blocks=2,
              text_dim=4096, pooled_dim=768, rope_axes=(16, 56, 56))
SHAPES = {"1.3k tokens": (5, 32, 32), "5k tokens": (5, 64, 64)}  # latent (T, H, W) -> T*H/2*W/2 video tokens
SMOKE_CONFIG = dict(hidden_size=128, num_heads=2, double_blocks=1, single_blocks=1, refiner_blocks=2,
                    text_dim=64, pooled_dim=32, rope_axes=(8, 28, 28))  # every row's code, in seconds
TEXT_LEN, TEXT_VALID = 402, 180  # [146 VLM ; 256 LLM] with a 34-token prompt
NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def interleaved(fns: dict, repeats: int) -> dict:
    """{name: (median, min, max) seconds}: one warm-up each, then `repeats` rounds that call every fn once."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t), max(t)) for name, t in times.items()}


def inputs(shape, config, seed=0):
    g = torch.Generator().manual_seed(seed)
    T, H, W = shape
    mask = torch.zeros(1, TEXT_LEN, dtype=torch.long)
    mask[:, :TEXT_VALID] = 1
    return dict(
        x=torch.randn(1, 16, T, H, W, generator=g), ref=torch.randn(1, 16, 1, H, W, generator=g),
        txt=torch.randn(1, TEXT_LEN, config.text_dim, generator=g), mask=mask,
        pooled=torch.randn(1, config.pooled_dim, generator=g), t=torch.tensor([937.5]),
    )


def sides(config, sd: dict, weights: torch.dtype) -> dict:
    """{label: (forward(a) -> velocity, compute dtype)} for one weight dtype, every model holding the same values."""
    compute = compute_dtype_for(torch.device("cpu"), weights)
    rounded = {k: v.to(weights) for k, v in sd.items()}
    ours = build_dit(config, rounded)
    out = {"ours": (lambda a: ours(a["x"], a["t"], a["txt"], a["mask"], a["pooled"], reference=a["ref"]), compute)}

    def diffusers_side(dtype):
        model = diffusers_dit(config, {k: v.to(dtype) for k, v in rounded.items()})
        return lambda a: model(a["i2v"].to(dtype), a["t"], a["txt"].to(dtype), a["mask"],
                               a["pooled"].to(dtype)).sample

    out["diffusers"] = (diffusers_side(compute), compute)  # the same arithmetic as ours: like with like
    if compute != weights:
        out[f"diffusers, {NAMES[weights]} compute"] = (diffusers_side(weights), weights)
    if comfyui_root() is not None:
        model = comfy_dit(config, {k: v.to(compute) for k, v in rounded.items()}, torch.device("cpu"))
        # Native encoders hand ComfyUI unpadded tokens (its token refiner averages over every token it is given):
        # the valid prefix, which is also all ours computes on.
        out["comfyui"] = (lambda a: model(a["i2v"].to(compute), a["t"], a["txt"][:, :TEXT_VALID].to(compute),
                                          y=a["pooled"].to(compute), attention_mask=a["mask"][:, :TEXT_VALID]),
                          compute)
    return out


def run(quick: bool, smoke: bool = False) -> dict:
    torch.manual_seed(0)
    config = tiny(**(SMOKE_CONFIG if smoke else CONFIG))
    reference_model = random_dit(config, seed=0)
    sd = reference_model.state_dict()
    repeats = 3 if quick else 5
    report = {"machine": machine(), "load average (1 min) at start": os.getloadavg()[0], "rows": []}
    shapes = {"smoke": (3, 8, 8)} if smoke else dict(list(SHAPES.items())[:1]) if quick else SHAPES
    repeats = 1 if smoke else repeats
    for label, shape in shapes.items():
        a = inputs(shape, config)
        with torch.inference_mode():
            a["i2v"] = reference_model._input(a["x"], a["ref"])
            reference = reference_model(a["x"], a["t"], a["txt"], a["mask"], a["pooled"], reference=a["ref"])
            with FlopCounterMode(display=False) as counter:
                reference_model(a["x"], a["t"], a["txt"], a["mask"], a["pooled"], reference=a["ref"])
            for weights in (torch.float32, torch.bfloat16):
                models = sides(config, sd, weights)
                times = interleaved({name: (lambda f=f: f(a)) for name, (f, _) in models.items()}, repeats)
                for name, (fn, compute) in models.items():
                    error = (fn(a).float() - reference).abs().max().item()
                    row = {"shape": label, "video tokens": shape[0] * shape[1] * shape[2] // 4,
                           "side": name, "weights": NAMES[weights], "computes in": NAMES[compute],
                           "median s": times[name][0], "min s": times[name][1], "max s": times[name][2],
                           "max |diff| vs fp32": error, "GFLOP/forward": counter.get_total_flops() / 1e9}
                    report["rows"].append(row)
                    print(json.dumps(row), flush=True)
    report["load average (1 min) at end"] = os.getloadavg()[0]
    return report


def ratios(report: dict) -> dict:
    """The bench table's figures, from the largest shape: time ratios of like with like, and each side's error."""
    last = report["rows"][-1]["shape"]
    rows = {(r["weights"], r["side"]): r for r in report["rows"] if r["shape"] == last}
    out = {"fp32 ours / diffusers": rows["fp32", "ours"]["median s"] / rows["fp32", "diffusers"]["median s"],
           "bf16 weights, ours / diffusers, same compute dtype":
               rows["bf16", "ours"]["median s"] / rows["bf16", "diffusers"]["median s"],
           "bf16 weights, max |diff| vs fp32, ours": rows["bf16", "ours"]["max |diff| vs fp32"],
           "bf16 weights, max |diff| vs fp32, diffusers": rows["bf16", "diffusers"]["max |diff| vs fp32"]}
    # where ours computes in bf16 too (a CPU with bf16 units, a GPU), the like-with-like diffusers row is this one
    native = rows.get(("bf16", "diffusers, bf16 compute"), rows["bf16", "diffusers"])
    out["bf16 weights, ours / diffusers computing in bf16"] = rows["bf16", "ours"]["median s"] / native["median s"]
    out["bf16 weights, max |diff| vs fp32, diffusers computing in bf16"] = native["max |diff| vs fp32"]
    if ("fp32", "comfyui") in rows:  # ComfyUI's native HunyuanVideo model, same weights
        out["fp32 ours / comfyui"] = rows["fp32", "ours"]["median s"] / rows["fp32", "comfyui"]["median s"]
        out["bf16 weights, ours / comfyui"] = rows["bf16", "ours"]["median s"] / rows["bf16", "comfyui"]["median s"]
        out["fp32 max |diff| vs fp32, comfyui"] = rows["fp32", "comfyui"]["max |diff| vs fp32"]
    return out


def where_time_goes(shape=(5, 64, 64), dtype=torch.float32, top: int = 8) -> list[tuple[str, float]]:
    """Share of our forward's CPU time per op (torch.profiler), largest first."""
    from torch.profiler import ProfilerActivity, profile

    model = random_dit(tiny(**CONFIG), seed=0, dtype=dtype)
    a = inputs(shape, model.config)
    with torch.inference_mode():
        model(a["x"], a["t"], a["txt"], a["mask"], a["pooled"], reference=a["ref"])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(a["x"], a["t"], a["txt"], a["mask"], a["pooled"], reference=a["ref"])
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return [(e.key, round(100 * e.self_cpu_time_total / total, 1)) for e in ranked]


def machine() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, " \
           f"{torch.backends.cpu.get_cpu_capability()}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one shape, fewer repeats")
    parser.add_argument("--smoke", action="store_true", help="a tiny model and shape: runs every row, in seconds")
    parser.add_argument("--json", type=Path, help="also write the report here")
    opts = parser.parse_args()
    result = run(opts.quick, opts.smoke)
    result["ratios"] = ratios(result)
    compute = {r["side"]: r["computes in"] for r in result["rows"] if r["weights"] == "bf16"}
    result["notes"] = ["bf16 weights compute in: " + ", ".join(f"{k} {v}" for k, v in compute.items())]
    if not opts.smoke:
        shape = SHAPES["1.3k tokens"] if opts.quick else SHAPES["5k tokens"]
        result["ours fp32, % of CPU time by op"] = where_time_goes(shape)
        print(json.dumps({"where the time goes (ours, fp32)": result["ours fp32, % of CPU time by op"]}))
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=1))
