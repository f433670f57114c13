"""Start-image preparation: the official resolution buckets, resize + centre crop or pad, and layout conversions.

Magic141 picks the bucket whose aspect ratio is nearest the image's (absolute difference of width/height), resizes
the image so it covers the bucket while keeping its aspect ratio, and crops the centre (datasets/test_image.py of
the official repository): `fit="crop"`. `fit="pad"` (letterbox) instead resizes the whole image to fit inside and
fills the rest with black bars, so nothing is cut off (a portrait's head). The bars are plain pixels of the start
image: no mask tells the model they are padding, so it treats them as part of the scene and they usually stay as
bars through the clip (crop them from the video afterwards). Images here are float tensors [B, H, W, C] in 0..1
(ComfyUI's IMAGE layout).

The video size policy (`video_size`) serves every caller (Image To Video, Long Video, the CLI): an official bucket,
a custom size, "draft" (the 540p bucket at 1/6 of each side, at most 17 frames per clip, or up to 4 windows of 9
frames per long video: a 2-core CPU finishes a template in a minute or two) or "auto" (540p on a GPU, draft on a
CPU). The choice is a visible combo entry whose label says what it does, and the size chosen is reported, a long
video's length in seconds and why (`VideoSize.describe`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..sampling.sampler import SIZE_MULTIPLE, latent_frames

# width x height per aspect ratio (w:h), from the official code
BUCKETS = {
    "540p": {(9, 16): (544, 960), (3, 4): (624, 832), (1, 1): (720, 720), (4, 3): (832, 624), (16, 9): (960, 544)},
    "720p": {(9, 16): (704, 1248), (3, 4): (832, 1104), (1, 1): (960, 960), (4, 3): (1104, 832), (16, 9): (1248, 704)},
}


def nearest_bucket(width: int, height: int, resolution: str = "540p") -> tuple[int, int]:
    """(width, height) of the official bucket nearest the aspect ratio width / height."""
    if resolution not in BUCKETS:
        raise ValueError(f"resolution must be one of {sorted(BUCKETS)}, got {resolution!r}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    ratio = width / height
    w_h = min(BUCKETS[resolution], key=lambda r: abs(r[0] / r[1] - ratio))
    return BUCKETS[resolution][w_h]


# ------------------------------------------------------------------------------------------ the video size policy
# Measured (scripts/first_run_times.py, docs/performance.md): on a 2-core CPU the full-size HunyuanVideo VAE's decode
# is nearly all of a draft's time (~20 MFLOP per output pixel): image_to_video at 1/4 size x 17 frames ran 216 s,
# at 1/6 size 82 s (71 s of it decoding), under load; so the draft is 1/6 size, and a long video's draft windows
# are short.
DRAFT_DIVISOR = 6  # draft frame: each side of the 540p bucket / 6, rounded down to a multiple of 16
DRAFT_FRAMES = 17  # draft clip: at most 17 frames (4k+1)
DRAFT_WINDOW_FRAMES = 9  # draft long video: windows of at most 9 frames ...
DRAFT_WINDOWS = 4  # ... the windows asked, up to 4 (three seams to judge): 21 frames, 0.9 s at 24 fps with the
# default motion context (5 frames: each later window adds 4), 33 frames with one seam frame
# The combo entries (their text is stored in saved workflows: never change a shipped one, add a new one). Each says
# what it does; `size_mode` reads any entry starting with "auto" / "draft" (the CLI's short names too).
AUTO = "auto (540p on a GPU, draft on CPU)"
DRAFT = "draft (1/6 size, <=17 frames)"  # literal text (saved in workflows); a test checks it against the numbers
DRAFT_LONG = "draft (1/6 size, <=4 windows of <=9 frames)"
# Long Video's draft entry of the versions that capped it at 2 windows: accepted from saved workflows, and still
# meaning what it says (entry -> its window cap)
EARLIER_DRAFT_LONG = {"draft (1/6 size, <=2 windows of <=9 frames)": 2}
CUSTOM = "custom"


def size_choices(long_video: bool = False) -> list[str]:
    """The resolution combo's entries, default first: auto, draft, the official buckets, custom. Entries saved by
    older workflows ("540p", "720p", "custom") are among them and mean what they meant."""
    return [AUTO, DRAFT_LONG if long_video else DRAFT, *BUCKETS, CUSTOM]


def size_mode(resolution: str, device: torch.device | str = "cpu") -> str:
    """The size actually used for the entry `resolution` on `device`: "540p", "720p", "draft" or "custom".

    "auto..." is "540p" on any accelerator (cuda, mps, xpu, ...) and "draft" on the CPU. Raises ValueError naming
    the entries for anything else."""
    if resolution in BUCKETS or resolution == CUSTOM:
        return resolution
    for mode in ("auto", "draft"):
        if isinstance(resolution, str) and resolution.split(" ")[0].split(":")[0] == mode:
            if mode == "auto":
                return "draft" if torch.device(device).type == "cpu" else "540p"
            return mode
    raise ValueError(f"resolution must be auto, draft, {', '.join(BUCKETS)} or custom, got {resolution!r}")


def draft_bucket(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the draft frame for an image of width x height: the nearest 540p bucket, each side divided
    by DRAFT_DIVISOR and rounded down to a multiple of 16 (16:9 -> 160x80, 1:1 -> 112x112, 9:16 -> 80x160)."""
    bucket = nearest_bucket(width, height, "540p")
    return tuple(max(SIZE_MULTIPLE, side // DRAFT_DIVISOR // SIZE_MULTIPLE * SIZE_MULTIPLE) for side in bucket)


@dataclass(frozen=True)
class VideoSize:
    """The size a clip is made at. mode: "540p", "720p", "draft" or "custom"; requested: the entry chosen (e.g.
    "auto ..."); device: the device type "auto" looked at; frames: per clip / window (after the draft cap), asked:
    before it; windows / asked_windows: the same for a long video (None for a single clip)."""

    width: int
    height: int
    frames: int
    mode: str
    requested: str
    device: str
    asked_frames: int
    windows: int | None = None
    asked_windows: int | None = None

    @property
    def window_cap(self) -> int | None:
        """The most windows this size renders (None: no cap): DRAFT_WINDOWS for a draft (an earlier draft entry: its
        own)."""
        return EARLIER_DRAFT_LONG.get(self.requested, DRAFT_WINDOWS) if self.mode == "draft" else None

    def with_windows(self, asked: int) -> VideoSize:
        """This size for a long video of `asked` windows (counted at `asked_frames`, the window length asked for):
        a draft renders the first `window_cap` of them, every other mode all of them."""
        cap = self.window_cap
        return replace(self, windows=asked if cap is None else min(asked, cap), asked_windows=asked)

    def describe(self, fps: float | None = None, asked: str | None = None, total_frames: int | None = None) -> str:
        """One line for the log, the node and the CLI: what is made and, where the draft cut it, why and how to get
        the rest. A clip: "auto on cpu -> draft: 112x112, 17 frames (81 asked, the draft's cap)". A long video (after
        `with_windows`), with `fps` and the duration `asked` ("60 s"): "auto on cpu -> draft: 160x80, 4 windows of 9
        frames = 33 frames = 1.4 s at 24 fps (60 s asked = 18 windows of 81 frames; a draft renders at most 4
        windows of at most 9 frames: for all of it choose resolution 540p, or custom, whose window_length applies)".
        total_frames: the video's frames (`windows.WindowPlan.total`) when windows share more than their seam frame
        (default windows x (frames - 1) + 1)."""
        how = f"auto on {self.device} -> {self.mode}" if self.requested.startswith("auto") else self.mode
        if self.windows is None:
            text = f"{how}: {self.width}x{self.height}, {self.frames} frames"
            return text + (f" ({self.asked_frames} asked, the draft's cap)" if self.frames != self.asked_frames else "")
        total = total_frames or self.windows * (self.frames - 1) + 1
        windows = f"{self.windows} window{'s' * (self.windows != 1)}"
        text = f"{how}: {self.width}x{self.height}, {windows} of {self.frames} frames = {total} frames"
        if fps:
            text += f" = {total / fps:.1f} s at {fps:g} fps"
        if (self.windows, self.frames) != (self.asked_windows, self.asked_frames):
            windows = f"{self.asked_windows} window{'s' * (self.asked_windows != 1)} of {self.asked_frames} frames"
            text += f" ({f'{asked} asked = ' if asked else ''}{windows}{'' if asked else ' asked'}; a draft renders " \
                    f"at most {self.window_cap} windows of at most {DRAFT_WINDOW_FRAMES} frames: for all of it " \
                    "choose resolution 540p, or custom, whose window_length applies)"
        return text


def video_size(resolution: str, image_width: int, image_height: int, frames: int,
               device: torch.device | str = "cpu", custom: tuple[int, int] | None = None,
               long_video: bool = False) -> VideoSize:
    """The one video size policy of the nodes and the CLI.

    resolution: a `size_choices` entry (or the CLI's "auto" / "draft"); image_width x image_height: the start
    image, whose aspect ratio picks the bucket; frames: the clip's (or each window's) length asked for, 4k+1;
    device: where the clip is computed ("auto" reads its type); custom: (width, height) for "custom" (checked by
    the caller, `sampler.latent_shape`); long_video: `frames` is a window's length. "540p" / "720p": the official
    bucket nearest the image's aspect ratio, frames as asked. "draft": `draft_bucket`, frames capped at DRAFT_FRAMES
    (a long video's windows at DRAFT_WINDOW_FRAMES, their number by `VideoSize.with_windows`). Raises ValueError for
    a bad entry, a length that is not 4k+1 (checked before any cap) or a custom size that is not given.
    """
    latent_frames(frames)  # a bad length is refused, never hidden by the draft's cap
    mode = size_mode(resolution, device)
    capped = frames
    if mode == "custom":
        if custom is None:
            raise ValueError("resolution custom needs a width and a height")
        width, height = custom
    elif mode == "draft":
        width, height = draft_bucket(image_width, image_height)
        capped = min(frames, DRAFT_WINDOW_FRAMES if long_video else DRAFT_FRAMES)
    else:
        width, height = nearest_bucket(image_width, image_height, mode)
    return VideoSize(width, height, capped, mode, resolution, torch.device(device).type, frames)


FITS = ("crop", "pad")


def center_crop_offsets(image_height: int, image_width: int, height: int, width: int) -> tuple[int, int]:
    """(top, left) of a height x width crop centred in an image_height x image_width picture, as torchvision's
    `CenterCrop` (the official preprocessing) computes them: int(round(overshoot / 2.0)), Python's round (half to
    even). Floor division differs by one pixel whenever the overshoot is 4k + 3 (e.g. 35 -> 18, not 17)."""
    return int(round((image_height - height) / 2.0)), int(round((image_width - width) / 2.0))


def fit_image(images: torch.Tensor, width: int, height: int, fit: str = "crop") -> torch.Tensor:
    """[B, H, W, C] in 0..1 -> [B, height, width, C] keeping the aspect ratio (bilinear, antialiased).

    fit "crop": cover width x height and crop the centre (the official preparation). fit "pad": fit inside and
    centre on black (letterbox / pillarbox bars; no mask marks them, see the module docstring).
    Raises ValueError for another `fit` or a tensor that is not [B, H, W, C].
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}: crop (fill the frame, cut the edges) or pad "
                         "(keep the whole image, add black bars)")
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {tuple(images.shape)}")
    _, h, w, _ = images.shape
    if (w, h) == (width, height):
        return images
    ratio = w / h
    if (ratio > width / height) == (fit == "crop"):  # crop a wider image / pad a taller one: match heights
        new_h, new_w = height, int(height * ratio)  # the official arithmetic (int of height x ratio), to the pixel
    else:
        new_w, new_h = width, int(width / ratio)
    new_h, new_w = (max(height, new_h), max(width, new_w)) if fit == "crop" else (min(height, new_h), min(width, new_w))
    new_h, new_w = max(1, new_h), max(1, new_w)
    x = F.interpolate(images.movedim(-1, 1).float(), size=(new_h, new_w), mode="bilinear", antialias=True,
                      align_corners=False).clamp(0, 1)
    if fit == "crop":
        top, left = center_crop_offsets(new_h, new_w, height, width)
        return x[:, :, top:top + height, left:left + width].movedim(1, -1).to(images.dtype)
    out = x.new_zeros(x.shape[0], x.shape[1], height, width)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[:, :, top:top + new_h, left:left + new_w] = x
    return out.movedim(1, -1).to(images.dtype)


def fit_clip(frames: torch.Tensor, width: int, height: int, fit: str = "crop", keep: int | None = None) -> torch.Tensor:
    """The frames of a clip to extend [S, H, W, C] (float 0..1 or uint8), fitted to width x height like the start
    image (`fit_image`, one frame at a time: memory follows the output size), as uint8 [S', height, width, 3] (how
    the video file stores them: frames already at the size come out bit for bit): all S frames, or the last `keep`.
    Raises ValueError for an empty clip or a bad `fit`."""
    if frames.ndim != 4 or not len(frames):
        raise ValueError(f"the clip to extend has no frames (shape {tuple(frames.shape)}); give at least one frame")
    frames = rgb(frames[-keep:] if keep else frames)
    out = torch.empty(len(frames), height, width, 3, dtype=torch.uint8)
    for i, frame in enumerate(frames):
        image = frame[None].float() / 255 if frame.dtype == torch.uint8 else frame[None].float()
        out[i] = (fit_image(image, width, height, fit)[0].clamp(0, 1) * 255).round().to(torch.uint8)
    return out


def rgb(images: torch.Tensor) -> torch.Tensor:
    """Drop an alpha channel, expand grey to RGB: [B, H, W, C] -> [B, H, W, 3]."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be [B, H, W, 1|3|4], got shape {tuple(images.shape)}")
    if images.shape[-1] == 1:
        return images.expand(*images.shape[:-1], 3)
    return images[..., :3]
