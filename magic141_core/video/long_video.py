"""Long video by a test-time sliding window (Magic141 paper, §4): clips of the model's native length, chained.

Window k+1 starts from the last frame of window k: that frame, colour-matched to the original prior (drift guard 1)
and re-encoded by the VAE (+ a little noise, drift guard 2), is its reference latent. The VLM image tokens keep
describing the original prior (the identity anchor), unless `anchor="frame"`. Window k+1's first frame duplicates
window k's last, so it is dropped: N windows of F frames make N(F-1)+1 frames, with no stutter at the seams.

Cost is linear in N and memory is flat: each window is sampled, decoded, and appended to the video file as soon as
it is done; only the last frame is carried over. On an interrupt (raised from `callback`) the caller gets the file
of the finished windows: see `Mp4Writer(keep_partial=True)`, which names it `*_partial.mp4`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from ..runtime.errors import oom_advice
from ..runtime.finite import VAE_ADVICE, check_finite
from ..sampling.euler import Step
from ..sampling.noise import check_seed
from ..sampling.sampler import latent_shape, sample_latent
from ..sampling.schedule import flow_sigmas
from ..vae import scale_latent, unscale_latent
from .color import match_color
from .mp4 import check_settings, to_uint8


def window_prompts(prompts: str | list[str], windows: int) -> list[str]:
    """One prompt per window: a list, or a text with one prompt per line; the last one repeats when short."""
    lines = [p.strip() for p in (prompts.splitlines() if isinstance(prompts, str) else prompts)]
    lines = [p for p in lines if p]
    if not lines:
        raise ValueError("give at least one prompt (one per line directs the windows in order)")
    return [lines[min(k, len(lines) - 1)] for k in range(windows)]


MAX_SECONDS = 3600.0  # the Long Video node's duration limit: an hour
MAX_WINDOWS = 3600  # the same limit counted in windows (lists sized by it are built before the first window)


def window_seeds(seed: int, windows: int) -> list[int]:
    """Window k's noise seed: seed + k (reproducible, and each window differs)."""
    return [(check_seed(int(seed)) + k) % 2**64 for k in range(check_windows(windows))]


def check_windows(windows) -> int:
    """`windows` as an int when it is a whole number from 1 to MAX_WINDOWS, else ValueError saying what is wrong."""
    if isinstance(windows, bool) or not isinstance(windows, int) or not (1 <= windows <= MAX_WINDOWS):
        raise ValueError(f"the number of windows must be a whole number from 1 to {MAX_WINDOWS}, got {windows!r}")
    return windows


def check_window_frames(window_frames: int) -> int:
    """A long video's window length: 4k+1 frames with k >= 1 (each window must add frames after the seam)."""
    if isinstance(window_frames, bool) or not isinstance(window_frames, int) or window_frames < 5 \
            or (window_frames - 1) % 4:
        raise ValueError(f"a long video's window length must be 4k+1 frames, at least 5 (5, 9, ..., 81), got "
                         f"{window_frames!r}")
    return window_frames


def windows_for(seconds: float, fps: float, window_frames: int = 81) -> int:
    """Windows needed for at least `seconds` of video (N windows give N(F-1)+1 frames). ValueError for a duration
    outside (0, MAX_SECONDS], an fps outside (0, 240] (NaN and inf included) or a bad window length."""
    check_window_frames(window_frames)
    if not (0 < fps <= 240):
        raise ValueError(f"fps must be a number in (0, 240], got {fps!r}")
    if not (0 < seconds <= MAX_SECONDS):
        raise ValueError(f"the duration must be a number of seconds in (0, {MAX_SECONDS:g}], got {seconds!r}")
    return max(1, math.ceil((seconds * fps - 1) / (window_frames - 1)))


def count_windows(duration: float, unit: str, fps: float, window_frames: int) -> int:
    """The number of windows of a long video whose `duration` is counted in `unit` ("seconds" or "windows"; a
    fractional window count is rounded, at least 1), validated with one clear ValueError for every caller (the CLI's
    --seconds / --windows, the Long Video node's duration)."""
    if unit == "seconds":
        return windows_for(duration, fps, window_frames)
    if unit != "windows":
        raise ValueError(f"unit must be 'seconds' or 'windows', got {unit!r}")
    check_window_frames(window_frames)
    if not (0 < duration <= MAX_WINDOWS):  # NaN and inf fail here, before round()
        raise ValueError(f"the number of windows must be a whole number from 1 to {MAX_WINDOWS}, got {duration!r}")
    return max(1, round(duration))


def total_frames(windows: int, window_frames: int) -> int:
    return windows * (window_frames - 1) + 1


@dataclass
class LongVideoSettings:
    """How a long video is rendered and written, shared by the CLI (`long`) and the Long Video node (built from its
    widgets). Every value is checked here, before the first window."""

    steps: int = 4
    shift: float = 5.0
    guidance: float = 1.0
    seed: int = 0  # window k's noise seed is seed + k (`window_seeds`)
    color_match: bool = True  # drift guard: match each new reference frame's L*a*b* mean/std to the prior's
    noise_augmentation: float = 0.02  # drift guard: std of noise added to each re-encoded reference latent
    anchor: str = "prior"  # VLM image tokens from the original "prior" or from each window's "frame"
    fps: float = 24.0
    quality: int = 19  # x264 CRF: lower is better

    def __post_init__(self):
        flow_sigmas(self.steps, self.shift)  # steps and shift checked before the first window, not at it
        check_seed(self.seed)
        check_settings(self.fps, self.quality)
        if self.anchor not in ("prior", "frame"):
            raise ValueError(f"anchor must be 'prior' or 'frame', got {self.anchor!r}")
        if not (0 <= self.noise_augmentation <= 1):
            raise ValueError(f"noise augmentation must be in [0, 1], got {self.noise_augmentation}")


class FrameVAE(Protocol):
    """What the runner needs from a VAE, with frames as [F, H, W, 3] float 0..1 (ComfyUI's IMAGE layout)."""

    def encode_frame(self, image: torch.Tensor, seed: int) -> torch.Tensor:  # [1,H,W,3] -> unscaled [1,16,1,h,w]
        ...

    def decode_frames(self, latent: torch.Tensor) -> Iterator[torch.Tensor]:  # unscaled [1,16,T,h,w] -> chunks
        ...


class CoreFrameVAE:
    """`FrameVAE` over our `HunyuanVideoVAE`: sampled encode (as the official pipeline), streaming tiled decode.
    `progress(done, total)` runs after each decoded chunk (raise from it to stop)."""

    def __init__(self, vae, memory_budget: int | None = None, progress: Callable[[int, int], None] | None = None):
        self.vae, self.memory_budget, self.progress = vae, memory_budget, progress

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.vae.activation_dtype

    def encode_frame(self, image, seed):
        pixels = image.movedim(-1, 1).to(self.vae.device) * 2 - 1  # [1, 3, H, W] in [-1, 1]
        return self.vae.encode(pixels, memory_budget=self.memory_budget).sample(torch.Generator().manual_seed(seed))

    def decode_frames(self, latent):
        for chunk in self.vae.decode_stream(latent.to(self.vae.device), memory_budget=self.memory_budget,
                                            callback=self.progress, output_device="cpu"):
            yield chunk[0].movedim(0, -1)  # [f, H, W, 3]


class ClipFrames:
    """Every frame of a long video, gathered as the windows are written, for a whole-clip IMAGE output that must stay
    within a memory limit. Held as uint8 (a quarter of the float32 IMAGE) until `image()`.

    Raises ValueError at construction, before any window is rendered, when `frames` x `height` x `width` as float32
    RGB would exceed `limit_bytes`, naming the setting `limit_name` (in MB) and the size needed."""

    def __init__(self, frames: int, height: int, width: int, limit_bytes: int, limit_name: str = "the limit",
                 what: str = "the whole clip"):
        need = frames * height * width * 3 * 4
        if need > limit_bytes:
            raise ValueError(
                f"{what}: the clip's {frames} frames of {width}x{height} take {need / 2**20:.0f} MB as IMAGE, above "
                f"{limit_name} {limit_bytes / 2**20:.0f} MB. Raise {limit_name} to at least "
                f"{math.ceil(need / 2**20)} if you have that much memory, shorten the clip, or take the video output "
                "instead (it streams from the file); nothing was rendered")
        self.buffer = torch.empty(frames, height, width, 3, dtype=torch.uint8)
        self.count = 0

    def append(self, frames: torch.Tensor) -> None:
        """Add a window's new frames [f, H, W, 3] uint8 (as `generate_long_video` writes them)."""
        self.buffer[self.count : self.count + len(frames)] = frames.to(self.buffer.device)
        self.count += len(frames)

    def image(self) -> torch.Tensor:
        """The frames so far as ComfyUI's IMAGE: [F, H, W, 3] float32 in [0, 1]."""
        return self.buffer[: self.count].float().div_(255)


@dataclass
class WindowDone:
    index: int
    total: int
    frames_written: int


def generate_long_video(model, encoders, vae: FrameVAE, prior: torch.Tensor, prompts: list[str], seeds: list[int],
                        window_frames: int, write: Callable[[torch.Tensor], None],
                        settings: LongVideoSettings = LongVideoSettings(),
                        on_step: Callable[[int, Step], None] | None = None,
                        on_window: Callable[[WindowDone], None] | None = None,
                        on_stage: Callable[[int, str], None] | None = None) -> int:
    """Render len(prompts) windows from `prior` ([1, H, W, 3] float 0..1, already at the video size) and pass each
    window's new frames to `write` ([f, H, W, 3] uint8) as soon as the window is decoded. Returns the number of
    frames written. `on_step(window, step)` runs after every denoising step (raise from it to stop);
    `on_stage(window, name)` after the other stages of a window: "text encode", "VAE encode", "write" (the VAE's
    decode reports its own chunks). A window whose
    latent or frames hold NaN / inf raises `runtime.finite.NonFiniteOutput` before any of its frames is written."""
    if len(prompts) != len(seeds) or not prompts:
        raise ValueError(f"need one seed per window prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
    _, height, width, _ = prior.shape
    shape = latent_shape(window_frames, height, width)
    reference_image, written = prior, 0
    for k, (prompt, seed) in enumerate(zip(prompts, seeds)):
        def done(name, k=k):
            if on_stage is not None:
                on_stage(k, name)

        anchor = prior if settings.anchor == "prior" else reference_image
        cond = encoders.encode(prompt, anchor, negative=settings.guidance != 1.0)
        done("text encode")
        reference = scale_latent(vae.encode_frame(reference_image, seed).float())
        done("VAE encode")
        if k > 0 and settings.noise_augmentation > 0:
            noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(seed))
            reference = reference + settings.noise_augmentation * noise.to(reference.device)
        cond = dataclasses.replace(cond, reference=reference)
        latent = sample_latent(model, cond, shape, steps=settings.steps, shift=settings.shift,
                               guidance=settings.guidance, seed=seed,
                               callback=None if on_step is None else (lambda step, k=k: on_step(k, step)))
        # the whole window as uint8 (a quarter of float32), then written at once: a stop never splits a window
        stage = f"long-video window {k + 1} of {len(prompts)} (VAE decode)"
        with oom_advice(f"decoding window {k + 1}"):  # checked before uint8: a NaN would become a black pixel
            frames = torch.cat([to_uint8(check_finite(chunk, stage, getattr(vae, "compute_dtype", chunk.dtype),
                                                      VAE_ADVICE))
                                for chunk in vae.decode_frames(unscale_latent(latent))])
        frames = frames[0 if k == 0 else 1:]  # drop the seam frame duplicated from the last window
        write(frames)
        done("write")
        written += len(frames)
        last = frames[-1:].float() / 255
        reference_image = match_color(last, prior) if settings.color_match else last
        if on_window is not None:
            on_window(WindowDone(k, len(prompts), written))
    return written
