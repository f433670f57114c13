"""The GPU check: one script, one process, a hard time budget (default 300 s), for the first GPU a session is lent.

On CUDA (the full check; docs/performance.md says how to run it through the device tool and what each figure means):
  1. the bf16 matmul rate of this GPU (8192^3), next to its datasheet dense bf16 peak;
  2. the full-size 13B DiT with random bf16 weights made on the GPU, one forward at the official 540p bucket
     (960x544, 81 frames: 21x34x60 = 42,840 video tokens + 402 text tokens), median of 3 after a warm-up, for ours,
     diffusers' HunyuanVideoTransformer3DModel(latent_concat) and ComfyUI's native HunyuanVideo on the SAME tensors;
     each row: seconds, fraction of the bf16 peak, attention backend, max |difference| to ours;
  3. the VAE decode of that clip's latent (21 latent frames -> 81 frames): our streaming decode and diffusers' tiled
     decode, seconds and peak allocated memory;
  4. one whole clip with stand-in encoders (random conditioning of the real shapes): start-image encode, 4 steps,
     decode, timed by stage (`magic141_core.runtime.profile`), peak memory, DiT forward count;
  5. the same forward with int8 weights (optimum-quanto), its time ratio to bf16 and its difference.
Without CUDA it runs a tiny configuration of every stage (seconds; the CI test runs it) and says so.

Every stage is checked against the budget before it starts (an estimate from what was already measured) and
skipped with a note when it would not fit; a watchdog writes what was measured and stops the process if a stage
overruns anyway. Results: JSON (--json PATH) and one summary table on stdout.
Run:  python benchmarks/gpu_check.py --json gpu_check.json [--budget 300] [--tiny] [--skip int8 comfyui]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_models as gm  # noqa: E402

from magic141_core import Conditioning, TextConditioning, full_13b, tiny  # noqa: E402
from magic141_core.runtime.profile import StageProfile, peak_memory_bytes, reset_peak_memory, synchronize  # noqa: E402
from magic141_core.vae import hunyuan_video_vae, tiny_vae  # noqa: E402

DATASHEET_BF16_DENSE = {"H200": 989e12, "H100": 989e12, "GH200": 989e12, "H800": 989e12, "B200": 2250e12,
                        "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12}
STAGES = ("matmul", "build", "ours", "diffusers", "comfyui", "vae_ours", "vae_diffusers", "clip", "int8")
TEXT_VALID = 402  # [146 VLM image tokens ; 256 LLM tokens], all valid: no mask, every fused kernel eligible


class Setup:
    """What runs where: the full 540p clip on CUDA, a tiny one elsewhere."""

    def __init__(self, device: torch.device, force_tiny: bool):
        self.device = device
        self.full = device.type == "cuda" and not force_tiny
        self.repeats = 3 if self.full else 2  # timed runs after the warm-up
        if self.full:
            self.config, self.vae_config, self.dtype = full_13b(), hunyuan_video_vae(), torch.bfloat16
            self.frames, self.height, self.width, self.text_len = 81, 544, 960, TEXT_VALID
        else:  # every stage at a size a 2-core CPU runs in seconds; fp32 so the parities are tight
            self.config = tiny(refiner_blocks=2)  # ComfyUI's token refiner has 2 blocks
            self.vae_config, self.dtype = tiny_vae(), torch.float32
            self.frames, self.height, self.width, self.text_len = 5, 32, 32, 12
        self.latent = ((self.frames - 1) // 4 + 1, self.height // 8, self.width // 8)
        t, h, w = self.latent
        self.video_tokens = t * (h // 2) * (w // 2)
        self.flops = gm.dit_flops(self.config, self.video_tokens, self.text_len)
        # VAE decode: ~0.78 PFLOP for 81 x 544 x 960 at the released widths (docs/performance.md), per output pixel
        # and scaling with the square of the widest level; only used to decide whether the stage fits the budget
        width = max(self.vae_config.block_out_channels) / 512
        self.vae_flops = 0.78e15 / (81 * 544 * 960) * self.frames * self.height * self.width * width**2

    def describe(self) -> dict:
        c = self.config
        return {"configuration": "full 13B, 540p bucket" if self.full else "TINY (no CUDA: a smoke run, not figures)",
                "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
                "torch": torch.__version__, "dtype": str(self.dtype).removeprefix("torch."),
                "DiT": f"{c.hidden_size} wide, {c.double_blocks}+{c.single_blocks} blocks",
                "frames": f"{self.frames} x {self.height} x {self.width}", "latent": list(self.latent),
                "video tokens": self.video_tokens, "text tokens": self.text_len,
                "DiT forward TFLOP": self.flops / 1e12}

    def dit_inputs(self, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed)
        t, h, w = self.latent
        c = self.config
        cpu = dict(x=torch.randn(1, 16, t, h, w, generator=g), reference=torch.randn(1, 16, 1, h, w, generator=g),
                   txt=torch.randn(1, self.text_len, c.text_dim, generator=g),
                   pooled=torch.randn(1, c.pooled_dim, generator=g))
        out = {k: v.to(self.device, self.dtype) for k, v in cpu.items()}
        out["mask"] = torch.ones(1, self.text_len, dtype=torch.long, device=self.device)
        out["t"] = torch.tensor([937.5], device=self.device)
        return out


class Budget:
    """Seconds left; a watchdog that, past the deadline plus a grace, writes the report and ends the process."""

    def __init__(self, seconds: float, grace: float, on_overrun):
        self.seconds, self.start = seconds, time.perf_counter()
        self.watchdog = threading.Timer(seconds + grace, on_overrun)
        self.watchdog.daemon = True
        self.watchdog.start()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def timed(fn, device, repeats: int = 3, budget: Budget | None = None) -> dict:
    """A warm-up call (under the profiler: it names the attention kernels), then up to `repeats` timed calls, as
    many as the budget allows at the warm-up's pace. Returns median, spread, backends and the last result."""
    synchronize(device)
    start = time.perf_counter()
    backends, out = gm.attention_backends(fn)
    synchronize(device)
    warm = time.perf_counter() - start
    n = repeats if budget is None else max(0, min(repeats, int((budget.left() - 5) / max(warm, 1e-6))))
    times = []
    for _ in range(n):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    row = {"warm-up s": warm, "runs": len(times), "attention": backends}
    if times:
        row |= {"median s": statistics.median(times), "min s": min(times), "max s": max(times)}
    else:
        row |= {"median s": warm, "note": "no time left for timed runs: the warm-up's time is reported"}
    return row | {"_out": out}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.float(), b.float()
    return {"max |diff|": (a - b).abs().max().item(), "max |ours|": a.abs().max().item(),
            "finite": bool(torch.isfinite(b).all())}


class Check:
    def __init__(self, args):
        self.args = args
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
        self.setup = Setup(self.device, args.tiny)
        self.report = {"setup": self.setup.describe(), "budget s": args.budget, "stages": {}}
        self.state: dict = {}
        self.current = None
        self.budget = Budget(args.budget, args.grace, self.overrun)

    # ------------------------------------------------------------------------------------------------ the harness
    def stage(self, name: str, fn, estimate: float | None = None, needs=()):
        """Run one stage unless skipped, out of budget, or missing what it needs; record its row."""
        row = self.report["stages"].setdefault(name, {})
        missing = [n for n in needs if n not in self.state]
        left = self.budget.left()
        if name in self.args.skip:
            row.update(status="skipped", note="--skip")
        elif missing:
            row.update(status="skipped", note=f"needs {', '.join(missing)}, which did not complete")
        elif estimate is not None and estimate > left:
            row.update(status="skipped", note=f"estimated {estimate:.0f} s, {left:.0f} s left of the budget")
        else:
            self.current = name
            start = time.perf_counter()
            reset_peak_memory(self.device)
            try:
                row.update(fn() or {})
                row["status"] = "ok"
            except Exception as e:  # one stage's failure costs its row, not the check
                row.update(status="failed", error=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
            row["stage s"] = time.perf_counter() - start
            row["peak memory GiB"] = (peak_memory_bytes(self.device) or 0) / 2**30
            self.current = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"[{self.budget.seconds - self.budget.left():6.1f} s] {name}: {row.get('status')} "
              f"{row.get('note') or row.get('error') or ''}", file=sys.stderr, flush=True)

    def overrun(self):
        note = (f"deadline: stopped during '{self.current}' "
                f"({self.args.budget:.0f} s budget + {self.args.grace:.0f} s grace)")
        self.report["stopped"] = note
        try:
            if self.current:
                self.report["stages"].setdefault(self.current, {}).update(status="stopped", note=note)
            self.finish()
        finally:
            os._exit(3)

    def forward_estimate(self, factor: float = 1.0) -> float | None:
        """Seconds for `factor` forwards at the pace ours ran (None before it ran)."""
        ours = self.report["stages"].get("ours", {})
        return None if "median s" not in ours else factor * ours["median s"]

    # ------------------------------------------------------------------------------------------------ the stages
    def run(self):
        s = self.setup
        print(f"GPU check: {s.describe()['configuration']} on {s.describe()['device']}", file=sys.stderr, flush=True)
        self.stage("matmul", self.matmul)
        paced = lambda flops, share: flops / (share * self.state.get("peak", 1e12))  # noqa: E731
        self.stage("build", self.build, 10.0 if s.full else 0.01)
        self.stage("ours", self.ours, 4 * paced(s.flops, 0.4), needs=("dit",))
        fwd = self.forward_estimate(4.5)  # warm-up (profiled) + 3 runs
        self.stage("diffusers", lambda: self.reference("diffusers"), fwd, needs=("dit", "out"))
        self.stage("comfyui", lambda: self.reference("comfyui"), fwd, needs=("dit", "out"))
        self.stage("vae_ours", self.vae_ours, 2 * paced(s.vae_flops, 0.2))
        vae = self.report["stages"].get("vae_ours", {}).get("median s")
        self.stage("vae_diffusers", self.vae_diffusers, None if vae is None else 3 * vae, needs=("vae", "frames"))
        clip = None if fwd is None or vae is None else self.forward_estimate(4) + 1.5 * vae
        self.stage("clip", self.clip, clip, needs=("dit", "vae"))
        self.stage("int8", self.int8, self.forward_estimate(6), needs=("dit", "out"))  # last: it changes the DiT
        self.finish()

    def matmul(self):
        n = 8192 if self.setup.full else 512
        a = torch.randn(n, n, device=self.device, dtype=self.setup.dtype)
        row = timed(lambda: a @ a, self.device, 10)
        row.pop("_out"), row.pop("attention")
        rate = 2 * n**3 / row["median s"]
        name = self.report["setup"]["device"]
        sheet = next((v for k, v in DATASHEET_BF16_DENSE.items() if k in name), None) if self.setup.full else None
        self.state["peak"] = sheet or rate
        return row | {"n": n, "measured TFLOP/s": rate / 1e12,
                      "datasheet bf16 dense TFLOP/s": None if sheet is None else sheet / 1e12,
                      "peak used for fractions": "datasheet" if sheet else "measured matmul"}

    def build(self):
        start = time.perf_counter()
        self.state["dit"] = gm.random_dit_on(self.setup.config, self.device, self.setup.dtype)
        synchronize(self.device)
        params = sum(p.numel() for p in self.state["dit"].parameters())
        return {"seconds": time.perf_counter() - start, "parameters B": params / 1e9,
                "weight GB": params * self.setup.dtype.itemsize / 1e9}

    def _rate(self, row: dict) -> dict:
        flops = self.setup.flops / row["median s"]
        return row | {"TFLOP/s": flops / 1e12, "fraction of bf16 peak": flops / self.state["peak"]}

    def ours(self):
        a = self.state["inputs"] = self.setup.dit_inputs()
        dit = self.state["dit"]
        with torch.inference_mode():
            row = timed(lambda: dit(a["x"], a["t"], a["txt"], a["mask"], a["pooled"], reference=a["reference"]),
                        self.device, self.setup.repeats, self.budget)
        out = self.state["out"] = row.pop("_out")
        return self._rate(row) | {"finite": bool(torch.isfinite(out).all())}

    def reference(self, which: str):
        a, dit = self.state["inputs"], self.state["dit"]
        sd = dit.state_dict()
        with torch.inference_mode():
            i2v = dit._input(a["x"], a["reference"]).to(self.setup.dtype)  # [noisy ; reference padded ; mask]
            if which == "diffusers":
                model = gm.diffusers_dit(self.setup.config, sd)
                fn = lambda: model(i2v, a["t"], a["txt"], a["mask"], a["pooled"]).sample  # noqa: E731
            else:
                model = gm.comfy_dit(self.setup.config, sd, self.device)
                fn = lambda: model(i2v, a["t"], a["txt"], y=a["pooled"], attention_mask=a["mask"])  # noqa: E731
            row = timed(fn, self.device, self.setup.repeats, self.budget)
        out = row.pop("_out")
        row = self._rate(row) | max_diff(self.state["out"], out)
        row["ours / this"] = self.report["stages"]["ours"]["median s"] / row["median s"]
        return row

    def vae_ours(self):
        if "vae" not in self.state:
            self.state["vae"] = gm.random_vae_on(self.setup.vae_config, self.device, self.setup.dtype)
        vae = self.state["vae"]
        t, h, w = self.setup.latent
        z = self.state["z"] = torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(3)).to(self.device)
        with torch.inference_mode():
            row = timed(lambda: torch.cat(list(vae.decode_stream(z))), self.device, 1, self.budget)
        row.pop("attention")
        self.state["frames"] = row.pop("_out")  # [1, 3, F, H, W] in 0..1, on the device like diffusers' output
        return row | {"frames": self.state["frames"].shape[2], "note": "streaming decode, chunks kept on the device"}

    def vae_diffusers(self):
        model = gm.diffusers_vae(self.state["vae"])
        model.enable_tiling()  # diffusers' defaults: 256 px tiles at stride 192, 16-frame tiles at stride 12
        z = self.state["z"]
        with torch.inference_mode():
            row = timed(lambda: (model.decode(z.to(self.setup.dtype)).sample.float() / 2 + 0.5).clamp(0, 1),
                        self.device, 1, self.budget)
        row.pop("attention")
        out = row.pop("_out")
        ours = self.report["stages"]["vae_ours"]
        return row | max_diff(self.state["frames"], out) | {"ours / this": ours["median s"] / row["median s"]}

    def clip(self):
        from magic141_core.video.long_video import CoreFrameVAE, LongVideoSettings, generate_long_video

        s = self.setup
        encoders = StandInEncoders(s.config, s.text_len)
        frame_vae, dit = CoreFrameVAE(self.state["vae"]), self.state["dit"]
        profile = StageProfile(self.device)
        profile.instrument(dit=dit, encoders=encoders, vae=frame_vae)
        prior = torch.rand(1, s.height, s.width, 3, generator=torch.Generator().manual_seed(5))
        frames = []
        try:
            generate_long_video(dit, encoders, frame_vae, prior, ["a stand-in prompt"], s.frames,
                                lambda f: frames.append(f.shape[0]), LongVideoSettings(seed=39))
        finally:
            del dit.forward  # the profile's wrapper; later stages time the bare model
        r = profile.report()
        return {"stages s": {k: v["seconds"] for k, v in r["stages"].items()}, "total s": r["total seconds"],
                "between stages s": r["unaccounted seconds"], "DiT forwards": r["DiT forwards"],
                "frames": sum(frames), "encoders": "stand-in: random conditioning of the real shapes"}

    def int8(self):
        from magic141_core.weights.int8 import quantize_linears_, weight_bytes

        dit, a = self.state["dit"], self.state["inputs"]
        if self.setup.dtype != torch.bfloat16:  # int8 layers take bf16 weights and activations (weights/int8.py)
            dit.to(torch.bfloat16)
        before = weight_bytes(dit)
        start = time.perf_counter()
        quantize_linears_(dit)
        synchronize(self.device)
        quantize_s = time.perf_counter() - start
        with torch.inference_mode():
            row = timed(lambda: dit(a["x"], a["t"], a["txt"], a["mask"], a["pooled"], reference=a["reference"]),
                        self.device, self.setup.repeats, self.budget)
        out = row.pop("_out")
        row = self._rate(row) | max_diff(self.state["out"], out)
        return row | {"quantize s": quantize_s, "int8 / bf16 weight bytes": weight_bytes(dit) / before,
                      "int8 / bf16 time": row["median s"] / self.report["stages"]["ours"]["median s"]}

    # ------------------------------------------------------------------------------------------------ the output
    def finish(self):
        text = summary(self.report)
        print(text, flush=True)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(self.report, indent=1, default=str))


class StandInEncoders:
    """The encoders' place in one clip, without their weights: random conditioning of the real shapes (146 VLM
    image tokens + LLM tokens, CLIP-L pooled). The real encoders are ~0.01 PFLOP of a clip's ~9 (docs/performance)."""

    def __init__(self, config, text_len: int):
        self.config, self.text_len, self.g = config, text_len, torch.Generator().manual_seed(7)

    def encode_image(self, image):
        return torch.randn(1, min(146, self.text_len // 2), self.config.text_dim, generator=self.g)

    def encode_text(self, prompts):
        n = self.text_len - min(146, self.text_len // 2)
        return (torch.randn(1, n, self.config.text_dim, generator=self.g), torch.ones(1, n, dtype=torch.long),
                torch.randn(1, self.config.pooled_dim, generator=self.g))

    def encode(self, prompt, image, negative=False):
        image_tokens = self.encode_image(image)
        tokens, mask, pooled = self.encode_text([prompt])
        return Conditioning(TextConditioning(torch.cat([image_tokens, tokens], 1),
                                             torch.cat([torch.ones(1, image_tokens.shape[1], dtype=torch.long),
                                                        mask], 1), pooled))


def summary(report: dict) -> str:
    """One table: a line per stage with its status and headline figures."""
    keys = ("median s", "min s", "max s", "TFLOP/s", "fraction of bf16 peak", "ours / this", "max |diff|",
            "peak memory GiB", "int8 / bf16 time", "measured TFLOP/s", "datasheet bf16 dense TFLOP/s", "total s",
            "DiT forwards", "parameters B")
    setup = report["setup"]
    lines = [f"GPU check: {setup['configuration']} | {setup['device']} | torch {setup['torch']} | {setup['dtype']} | "
             f"{setup['frames']} frames, {setup['video tokens']} + {setup['text tokens']} tokens, "
             f"{setup['DiT forward TFLOP']:.1f} TFLOP per forward"]
    for name, row in report["stages"].items():
        figures = ", ".join(f"{k} {row[k]:.4g}" if isinstance(row[k], float) else f"{k} {row[k]}"
                            for k in keys if row.get(k) is not None)
        extra = row.get("attention") and f" | attention {'/'.join(row['attention'])}"
        note = row.get("note") or row.get("error")
        lines.append(f"{name:14s} {row.get('status', '?'):8s} {figures}{extra or ''}{f' | {note}' if note else ''}")
        if "stages s" in row:
            lines.append(" " * 24 + ", ".join(f"{k} {v:.3g}" for k, v in row["stages s"].items()))
    if "stopped" in report:
        lines.append(report["stopped"])
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole check (default 300)")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds past the budget before the watchdog writes "
                        "the report and stops the process (exit 3) (default 15)")
    parser.add_argument("--tiny", action="store_true", help="the tiny configuration even on CUDA")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where CUDA is available")
    parser.add_argument("--skip", nargs="*", default=[], choices=STAGES, help="stages not to run")
    args = parser.parse_args(argv)
    check = Check(args)
    check.run()
    check.budget.watchdog.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
