"""DiT forward time: ours vs diffusers' HunyuanVideoTransformer3DModel (and ComfyUI's native HunyuanVideo model when
ComfyUI is installed: loaded by ComfyUI's own loader from the same weights), same inputs, on this machine, in one run.

Prints median seconds per forward after warm-up, the ratio ours / diffusers, and the fraction of the machine's
matmul peak each reaches (FLOPs counted with torch's FlopCounterMode; peak = a large fp32 matmul timed in this run).
Run:  python benchmarks/dit_forward.py [--quick]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from magic141_core import tiny  # noqa: E402
from magic141_core.checkpoints import to_diffusers  # noqa: E402
from magic141_core.demo import random_dit  # noqa: E402

CONFIG = dict(hidden_size=1024, num_heads=8, double_blocks=2, single_blocks=4, refiner_blocks=2,
              text_dim=4096, pooled_dim=768, rope_axes=(16, 56, 56))
SHAPES = {"1.3k tokens": (5, 32, 32), "5k tokens": (5, 64, 64)}  # latent (T, H, W) -> T*H/2*W/2 video tokens
TEXT_LEN, TEXT_VALID = 402, 180  # [146 VLM ; 256 LLM] with a 34-token prompt


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(dtype: torch.dtype) -> float:
    """FLOP/s of a 2048^3 matmul through F.linear (the path the models' linears take)."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    seconds = median_time(lambda: torch.nn.functional.linear(a, b), 3)
    return 2 * 2048**3 / seconds


def diffusers_model(config, sd, dtype):
    from diffusers import HunyuanVideoTransformer3DModel

    model = HunyuanVideoTransformer3DModel(
        in_channels=33, out_channels=16, num_attention_heads=config.num_heads, attention_head_dim=config.head_dim,
        num_layers=config.double_blocks, num_single_layers=config.single_blocks,
        num_refiner_layers=config.refiner_blocks, text_embed_dim=config.text_dim,
        pooled_projection_dim=config.pooled_dim, rope_axes_dim=config.rope_axes, guidance_embeds=False,
        image_condition_type="latent_concat",
    )
    model.load_state_dict(to_diffusers(sd))
    return model.to(dtype).eval()


def comfy_model(sd, dtype):
    """ComfyUI's native HunyuanVideo model loaded from our weights by ComfyUI's own loader (model detection and its
    key conversion, as native UNETLoader does), if ComfyUI is installed (scripts/setup_comfyui.sh: .host/ComfyUI,
    or MAGIC141_HOST). Returns (diffusion_model, the dtype ComfyUI computes in) or None."""
    host = Path(os.environ.get("MAGIC141_HOST", Path(__file__).resolve().parents[1] / ".host"))
    if not (host / "ComfyUI" / "main.py").is_file():
        return None
    for path in (str(host / "stubs"), str(host / "ComfyUI")):  # stand-ins for torchvision/torchaudio on CPU torch
        if path not in sys.path:
            sys.path.insert(0, path)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model_state_dict(dict(sd), model_options={"dtype": dtype})
    if patcher is None:
        raise RuntimeError("ComfyUI did not recognise the weights as a diffusion model")
    model = patcher.model
    if type(model).__name__ != "HunyuanVideoI2V":
        raise RuntimeError(f"ComfyUI detected {type(model).__name__}, not HunyuanVideoI2V")
    compute = model.manual_cast_dtype or model.get_dtype()
    return model.diffusion_model.eval(), compute


def inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    T, H, W = shape
    mask = torch.zeros(1, TEXT_LEN, dtype=torch.long)
    mask[:, :TEXT_VALID] = 1
    return dict(
        x=torch.randn(1, 16, T, H, W, generator=g), ref=torch.randn(1, 16, 1, H, W, generator=g),
        txt=torch.randn(1, TEXT_LEN, CONFIG["text_dim"], generator=g), mask=mask,
        pooled=torch.randn(1, CONFIG["pooled_dim"], generator=g), t=torch.tensor([937.5]),
    )


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    config = tiny(**CONFIG)
    fp32_weights = random_dit(config, seed=0)
    sd = fp32_weights.state_dict()
    repeats = 2 if quick else 5
    peak = {torch.float32: matmul_peak(torch.float32), torch.bfloat16: matmul_peak(torch.bfloat16)}
    report = {"machine": machine(), "fp32 matmul peak GFLOP/s": peak[torch.float32] / 1e9,
              "bf16 matmul peak GFLOP/s": peak[torch.bfloat16] / 1e9, "rows": []}
    shapes = dict(list(SHAPES.items())[:1]) if quick else SHAPES
    for dtype in (torch.float32, torch.bfloat16):
        ours = random_dit(config, seed=0, dtype=dtype)
        theirs = diffusers_model(config, sd, dtype)
        comfy = comfy_model(sd, dtype)
        for label, shape in shapes.items():
            a = inputs(shape, dtype)
            i2v = torch.cat([a["x"], torch.nn.functional.pad(a["ref"], (0, 0, 0, 0, 0, shape[0] - 1)),
                             torch.zeros(1, 1, *shape).index_fill_(2, torch.tensor([0]), 1.0)], dim=1)

            def ours_fn():
                return ours(a["x"], a["t"], a["txt"], a["mask"], a["pooled"], reference=a["ref"])

            def diffusers_fn():
                return theirs(i2v.to(dtype), a["t"], a["txt"].to(dtype), a["mask"], a["pooled"].to(dtype)).sample

            with torch.inference_mode():
                with FlopCounterMode(display=False) as counter:
                    diffusers_fn()
                flops = counter.get_total_flops()
                row = {"dtype": str(dtype).removeprefix("torch."), "shape": label,
                       "video tokens": shape[0] * shape[1] * shape[2] // 4, "GFLOP/forward": flops / 1e9}
                row["ours s"] = median_time(ours_fn, repeats)
                row["diffusers s"] = median_time(diffusers_fn, repeats)
                if comfy is not None:
                    comfy_net, comfy_dtype = comfy
                    # Native encoders hand ComfyUI unpadded tokens (its refiner averages over every token given):
                    # the valid prefix, which is also all our model computes on.
                    txt, mask = a["txt"][:, :TEXT_VALID].to(dtype), a["mask"][:, :TEXT_VALID]

                    def comfy_fn():
                        return comfy_net(i2v.to(dtype), a["t"], txt, y=a["pooled"].to(dtype), attention_mask=mask)

                    row["comfyui s"] = median_time(comfy_fn, repeats)
                    row["comfyui computes in"] = str(comfy_dtype).removeprefix("torch.")
                    row["comfyui max |d| vs ours"] = (comfy_fn().float() - ours_fn().float()).abs().max().item()
            row["ours / diffusers"] = row["ours s"] / row["diffusers s"]
            row["ours % of fp32 peak"] = 100 * flops / row["ours s"] / peak[torch.float32]
            row["diffusers % of own-dtype peak"] = 100 * flops / row["diffusers s"] / peak[dtype]
            if "comfyui s" in row:
                row["ours / comfyui"] = row["ours s"] / row["comfyui s"]
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    return report


def where_time_goes(shape=(5, 64, 64), dtype=torch.float32, top: int = 8) -> list[tuple[str, float]]:
    """Share of our forward's CPU time per op (torch.profiler), largest first."""
    from torch.profiler import ProfilerActivity, profile

    model = random_dit(tiny(**CONFIG), seed=0, dtype=dtype)
    a = inputs(shape, dtype)
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
    parser.add_argument("--json", type=Path, help="also write the report here")
    opts = parser.parse_args()
    result = run(opts.quick)
    last_shape = result["rows"][-1]["shape"]
    result["ratios"] = {f"{r['dtype'].replace('float32', 'fp32').replace('bfloat16', 'bf16')} ours / {ref}":
                        r[f"ours / {ref}"] for r in result["rows"] if r["shape"] == last_shape
                        for ref in ("diffusers", "comfyui") if f"ours / {ref}" in r}
    result["ours fp32, % of CPU time by op"] = where_time_goes(SHAPES["1.3k tokens"] if opts.quick else SHAPES["5k tokens"])
    print(json.dumps({"where the time goes (ours, fp32)": result["ours fp32, % of CPU time by op"]}))
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=1))
