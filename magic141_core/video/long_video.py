"""Long video by a test-time sliding window (Magic141 paper, §4): clips of the model's native length, chained with
motion context.

Window k+1 is conditioned on the last N frames of the video so far (N = 1, 5, 9 or 13: 1 to 4 latent frames of the
causal VAE), so a pan or a walk keeps its speed and direction across the seam; those frames, colour-matched to the
anchor (drift guard 1) and re-encoded by the VAE (+ a little noise, drift guard 2), are its reference latent
[1, 16, L, h, w], which every model family takes in its own way (concat models: the reference and mask cover the
first L latent frames, as ComfyUI's HunyuanImageToVideo does with several start frames). The window renders those N
frames again at its start; they are dropped, so every frame is written once (`windows.WindowPlan`). The VLM image
tokens keep describing the original prior (the identity anchor), unless `anchor="frame"`. A long video can also
continue a clip (`start_clip`): window 0 then starts from the clip's last frames, and the clip can be written first.

Colour anchor: "start" matches every context to the colour statistics of the frames the video started from (the
start image, or the start clip's last frames): drift cannot accumulate. "previous" matches it to the previous
window's frames: legitimate colour changes (a pan into a darker room) carry on, and so does drift.

Random draws: window k's initial noise, the posterior sample of its reference and its noise augmentation each come
from their own stream (seed, purpose, k) of `sampling.noise`.

Shots: a window in `plan.cuts` starts from its own prior image (`shots`) instead of the video's last frames, like
window 0 of an image start; that image is also the identity anchor (and the "start" colour anchor) of its shot.

Cost is linear in the number of windows and memory is flat: each window is sampled, decoded, and appended to the
video file as soon as it is done; only the `Handover` (the last N frames and six colour statistics) is carried
over. It is all a later window needs, so a run can start at any window from a saved hand-over (`resume`:
`video.resume` keeps one per window beside the file). On an interrupt (raised from `callback`) the caller gets the
file of the finished windows: see `Mp4Writer(keep_partial=True)`, which names it `*_partial.mp4`.
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
from ..sampling.noise import INITIAL_NOISE, NOISE_AUGMENTATION, POSTERIOR_SAMPLE, check_seed, stream_noise, stream_seed
from ..sampling.sampler import latent_shape, sample_latent
from ..sampling.schedule import flow_sigmas
from ..vae import scale_latent, unscale_latent
from .color import ColorStats, color_stats, match_color
from .mp4 import check_settings, to_uint8
from .windows import DEFAULT_CONTEXT_FRAMES, WindowPlan, check_context_frames

COLOR_ANCHORS = ("start", "previous")


@dataclass
class LongVideoSettings:
    """How a long video is rendered and written, shared by the CLI (`long`) and the Long Video node (built from its
    widgets). Every value is checked here, before the first window."""

    steps: int = 4
    shift: float = 5.0
    guidance: float = 1.0
    seed: int = 0  # window k draws from the streams (seed, purpose, k) (`sampling.noise.stream_seed`)
    cfg: float = 1.0  # classifier-free guidance on top of an embedded guidance (`sampling.guidance`); 1: none
    color_match: bool = True  # drift guard: match each window's context frames' L*a*b* mean/std to `color_anchor`
    noise_augmentation: float = 0.02  # drift guard: std of noise added to each re-encoded context latent
    anchor: str = "prior"  # VLM image tokens from the original "prior" or from each window's "frame"
    fps: float = 24.0
    quality: int = 19  # x264 CRF: lower is better
    context_frames: int = DEFAULT_CONTEXT_FRAMES  # N: the last N frames condition the next window (1, 5, 9, 13)
    color_anchor: str = "start"  # match contexts to the "start" frames' colours (fixed) or the "previous" window's
    include_start: bool = False  # extending a clip: write its frames first, so the file is the whole clip

    def __post_init__(self):
        flow_sigmas(self.steps, self.shift)  # steps and shift checked before the first window, not at it
        check_seed(self.seed)
        check_settings(self.fps, self.quality)
        check_context_frames(self.context_frames)
        if self.anchor not in ("prior", "frame"):
            raise ValueError(f"anchor must be 'prior' or 'frame', got {self.anchor!r}")
        if self.color_anchor not in COLOR_ANCHORS:
            raise ValueError(f"color_anchor must be one of {COLOR_ANCHORS}, got {self.color_anchor!r}")
        if not (math.isfinite(self.cfg) and self.cfg >= 0):
            raise ValueError(f"cfg must be a finite number >= 0, got {self.cfg} (1: no classifier-free guidance)")
        if not (0 <= self.noise_augmentation <= 1):
            raise ValueError(f"noise augmentation must be in [0, 1], got {self.noise_augmentation}")


class FrameVAE(Protocol):
    """What the runner needs from a VAE, with frames as [F, H, W, 3] float 0..1 (ComfyUI's IMAGE layout)."""

    def encode_frames(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        """[1 + 4(L-1), H, W, 3] -> unscaled [1, 16, L, h, w]; `seed`: the posterior sample's stream seed."""
        ...

    def decode_frames(self, latent: torch.Tensor) -> Iterator[torch.Tensor]:  # unscaled [1,16,T,h,w] -> chunks
        ...


class CoreFrameVAE:
    """`FrameVAE` over our `HunyuanVideoVAE`: sampled encode (as the official pipeline), streaming tiled decode.
    `progress(done, total)` runs after each decoded chunk (raise from it to stop)."""

    def __init__(self, vae, memory_budget: int | None = None, progress: Callable[[int, int], None] | None = None):
        self.vae, self.memory_budget, self.progress = vae, memory_budget, progress
        self.tiling = None  # planned per decode from the memory budget, unless `plan_decode` fixed it

    def plan_decode(self, latent_shape) -> int:
        """Fix the decode's tiling for window latents of `latent_shape` [B, 16, T, h, w], planned now from the memory
        budget as each decode would, and return its number of chunks: each window's decode progress total, known
        before the first window (the CLI's bar)."""
        from ..vae.streaming import resolve_tiling
        from ..vae.tiling import chunk_spans

        self.tiling = resolve_tiling(self.vae, latent_shape, None, self.memory_budget, decoder=True, stream=True)
        return len(chunk_spans(latent_shape[2], self.tiling.chunk_frames))

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.vae.activation_dtype

    def parameters(self):
        return self.vae.parameters()

    def encode_frames(self, frames, seed):
        pixels = frames.movedim(-1, 0).unsqueeze(0).to(self.vae.device) * 2 - 1  # [1, 3, F, H, W] in [-1, 1]
        return self.vae.encode(pixels, memory_budget=self.memory_budget).sample(seed)

    def decode_frames(self, latent):
        for chunk in self.vae.decode_stream(latent.to(self.vae.device), self.tiling, memory_budget=self.memory_budget,
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


def as_float(frames: torch.Tensor) -> torch.Tensor:
    """Frames as float32 0..1: uint8 / 255, floats as they are."""
    return frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()


@dataclass
class Handover:
    """What window `window` needs from the video before it, and nothing more: small enough to keep beside the file
    and resume from. Built by `start`, then `after` each window."""

    window: int  # the index of the window it feeds
    context: torch.Tensor  # [n, H, W, 3] float 0..1: the video's last n frames, not yet colour-matched
    color_anchor: ColorStats  # what the context's colours are matched to
    frames_written: int
    from_video: bool  # the context is frames of a video (matched and noise-augmented), not the start image

    @staticmethod
    def start(prior: torch.Tensor, start_clip: torch.Tensor | None, plan: WindowPlan) -> Handover:
        """Window 0's: the start image [1, H, W, 3], or the last frames of `start_clip` [S, H, W, 3] (written
        first when the plan includes it)."""
        context = prior if start_clip is None else as_float(start_clip[-plan.context(0):])
        return Handover(0, context, color_stats(context), plan.start_frames * plan.include_start,
                        start_clip is not None)

    def cut(self, image: torch.Tensor) -> Handover:
        """This window's hand-over when it starts a new shot from `image` [1, H, W, 3]: the image is its context and
        its colour anchor, as for window 0 of an image start."""
        return Handover(self.window, image, color_stats(image), self.frames_written, False)

    def after(self, new: torch.Tensor, plan: WindowPlan, settings: LongVideoSettings) -> Handover:
        """The handover to the next window, once this one wrote its `new` frames [f, H, W, 3] uint8."""
        frames = new.float() / 255
        context = torch.cat([self.context, frames])[-plan.context(self.window + 1):]
        anchor = self.color_anchor if settings.color_anchor == "start" else color_stats(frames)
        return Handover(self.window + 1, context, anchor, self.frames_written + len(new), True)

    def model_context(self, settings: LongVideoSettings) -> torch.Tensor:
        """The context as the model sees it [n, H, W, 3]: colour-matched to the anchor when it is video frames."""
        if self.from_video and settings.color_match:
            return match_color(self.context, self.color_anchor)
        return self.context

    def reference(self, vae: FrameVAE, context: torch.Tensor, settings: LongVideoSettings) -> torch.Tensor:
        """The scaled reference latent [1, 16, L, h, w] of `context` (`model_context`): the VAE's posterior sample,
        plus noise augmentation when it is video frames, each from its own stream (seed, purpose, window)."""
        seed = stream_seed(settings.seed, POSTERIOR_SAMPLE, self.window)
        reference = scale_latent(vae.encode_frames(context, seed).float())
        if self.from_video and settings.noise_augmentation > 0:
            noise = stream_noise(tuple(reference.shape), settings.seed, NOISE_AUGMENTATION, self.window)
            reference = reference + settings.noise_augmentation * noise.to(reference.device)
        return reference


@dataclass
class WindowDone:
    index: int
    total: int
    frames_written: int
    handover: Handover  # what the next window starts from


def generate_long_video(model, encoders, vae: FrameVAE, prior: torch.Tensor, prompts: list[str], window_frames: int,
                        write: Callable[[torch.Tensor], None], settings: LongVideoSettings = LongVideoSettings(), *,
                        start_clip: torch.Tensor | None = None,
                        shots: dict[int, torch.Tensor] | None = None,
                        plan: WindowPlan | None = None,
                        resume: Handover | None = None,
                        on_step: Callable[[int, Step], None] | None = None,
                        on_window: Callable[[WindowDone], None] | None = None,
                        on_stage: Callable[[int, str], None] | None = None) -> int:
    """Render len(prompts) windows of `window_frames` frames and pass each window's new frames to `write`
    ([f, H, W, 3] uint8) as soon as the window is decoded. Returns the number of frames written.

    prior: [1, H, W, 3] float 0..1 at the video size: the identity anchor (the VLM's image) and, without
    `start_clip`, the start image. start_clip: [S, H, W, 3] float 0..1 or uint8 at the video size, a clip to continue
    from its last frames: the whole clip with `settings.include_start` (written first, bit for bit as uint8), else at
    least its last `context_frames` frames. shots: {window: image [1, H, W, 3] float 0..1} for the windows that start
    a new shot (cuts, k >= 1): each starts from its image, which is the identity anchor of its shot. plan: the
    `WindowPlan` (default: made from the arguments, with the shots' windows as cuts). resume: the hand-over of the
    window to start at (`Handover.window`); the windows before it are not rendered (their frames are in the video
    already) and the start clip is not written again (only its length, in `plan`, matters then).
    `on_step(window, step)` runs after every denoising step (raise from it to stop); `on_window` after each window is
    written; `on_stage(window, name)` after the other stages of a window: "text encode", "VAE encode", "write" (the
    VAE's decode reports its own chunks). A window whose latent or frames hold NaN / inf raises
    `runtime.finite.NonFiniteOutput` before any of its frames is written. ValueError (before any work) for a bad
    plan (`windows.WindowPlan`), a start clip that is empty or not of the prior's size, shots that are not the
    plan's cuts or not of the prior's size."""
    if start_clip is not None and (start_clip.ndim != 4 or not len(start_clip)
                                   or start_clip.shape[1:] != prior.shape[1:]):
        raise ValueError(f"the start clip must be frames [S >= 1, H, W, 3] of the prior's size "
                         f"{tuple(prior.shape[1:])}, got {tuple(start_clip.shape)}")
    shots = dict(shots or {})
    if plan is None:
        plan = WindowPlan(len(prompts), window_frames, settings.context_frames,
                          0 if start_clip is None else len(start_clip), settings.include_start, frozenset(shots))
    if (plan.windows, plan.window_frames, plan.context_frames) != (len(prompts), window_frames,
                                                                   settings.context_frames):
        raise ValueError(f"the plan ({plan.windows} windows of {plan.window_frames} frames, context "
                         f"{plan.context_frames}) does not match the {len(prompts)} prompts, {window_frames} frames "
                         f"and context {settings.context_frames} asked")
    if set(shots) != set(plan.cuts) or any(image.shape != prior.shape for image in shots.values()):
        raise ValueError(f"shots must give one image of the prior's shape {tuple(prior.shape)} for each cut "
                         f"{sorted(plan.cuts)}; got windows {sorted(shots)}")
    _, height, width, _ = prior.shape
    shape = latent_shape(window_frames, height, width)
    if resume is None:
        handover = Handover.start(prior, start_clip, plan)
        if plan.include_start:
            write(to_uint8(start_clip))
    else:
        handover = resume
    for k in range(handover.window, plan.windows):
        def done(name, k=k):
            if on_stage is not None:
                on_stage(k, name)

        if k in shots:
            handover = handover.cut(shots[k])
        shot = shots.get(max((c for c in shots if c <= k), default=-1), prior)  # this shot's identity anchor
        context = handover.model_context(settings)
        cond = encoders.encode(prompts[k], shot if settings.anchor == "prior" else context[-1:],
                               negative=settings.guidance != 1.0 or settings.cfg != 1.0)
        done("text encode")
        reference = handover.reference(vae, context, settings)
        done("VAE encode")
        cond = dataclasses.replace(cond, reference=reference)
        latent = sample_latent(model, cond, shape, steps=settings.steps, shift=settings.shift,
                               guidance=settings.guidance, seed=stream_seed(settings.seed, INITIAL_NOISE, k),
                               cfg=settings.cfg,
                               callback=None if on_step is None else (lambda step, k=k: on_step(k, step)))
        # the whole window as uint8 (a quarter of float32), then written at once: a stop never splits a window
        stage = f"long-video window {k + 1} of {plan.windows} (VAE decode)"
        with oom_advice(f"decoding window {k + 1}"):  # checked before uint8: a NaN would become a black pixel
            frames = torch.cat([to_uint8(check_finite(chunk, stage, getattr(vae, "compute_dtype", chunk.dtype),
                                                      VAE_ADVICE))
                                for chunk in vae.decode_frames(unscale_latent(latent))])
        new = frames[plan.dropped(k):]  # the context frames, rendered again, are already in the video
        write(new)
        done("write")
        handover = handover.after(new, plan, settings)
        if on_window is not None:
            on_window(WindowDone(k, plan.windows, handover.frames_written, handover))
    return handover.frames_written
