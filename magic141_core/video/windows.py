"""The plan of a long video, as plain arithmetic (no model): how many windows, which frames each writes, where the
seams fall, and the one check of every length a caller passes (CLI `long`, the Long Video node).

A window is a clip of F = 4k+1 frames. Window 0 starts from the start image (its F frames are all written: frame 0
is the model's rendering of the image), or from the last frames of a clip being extended. Every later window is
conditioned on the last N frames of the video so far (its motion context, N in `CONTEXT_FRAMES`: 1, 2, 3 or 4
latent frames); it renders those N frames again at its start, and they are dropped, so each frame is written once
and each later window adds F - N frames. N = 1 is the classic sliding window (one re-encoded seam frame).

Shots: a prompt line that starts with `CUT` ("[cut]") starts its window from a new prior image instead of the
video's last frames (`storyboard`); that window is rendered like window 0 (all F frames written, nothing dropped) and
its start is a cut, not a seam (`WindowPlan.cuts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..runtime.text_file import check_text_size
from ..vae.shapes import latent_frames

MAX_SECONDS = 3600.0  # the Long Video node's duration limit: an hour
MAX_WINDOWS = 3600  # the same limit counted in windows (lists sized by it are built before the first window)
CONTEXT_FRAMES = (1, 5, 9, 13)  # N: 1 + 4(L - 1) frames, the causal VAE's L = 1..4 latent frames
DEFAULT_CONTEXT_FRAMES = 5  # 2 latent frames: the least that carries a speed (benchmarks/long_video_seams.py)
CUT = "[cut]"  # a prompt line starting with this (any case) starts a new shot from a new prior


@dataclass(frozen=True)
class WindowPrompt:
    """One window's prompt, and whether the window starts a new shot (a `CUT` line)."""

    text: str
    cut: bool = False


def storyboard(prompts: str | list[str], windows: int) -> list[WindowPrompt]:
    """One `WindowPrompt` per window: from a list, or a text with one prompt per line (blank lines skipped); the last
    line repeats when short (its repeats continue the shot: they are no cuts). A line starting with `CUT` starts a
    new shot; the marker is not part of the prompt. ValueError for a text over `runtime.text_file.MAX_PROMPT_BYTES`
    characters (before it is split), no prompt at all, a cut on the first line (the first window starts from the
    prior already) or a cut with no prompt after it."""
    if isinstance(prompts, str):
        check_text_size(prompts, "the prompts text")
    lines = [p.strip() for p in (prompts.splitlines() if isinstance(prompts, str) else prompts)]
    board = []
    for line in filter(None, lines):
        cut = line[:len(CUT)].lower() == CUT
        text = line[len(CUT):].strip() if cut else line
        if cut and not text:
            raise ValueError(f"prompt line {len(board) + 1} is only {CUT}: write the new shot's prompt after it, e.g. "
                             f"'{CUT} a lighthouse at dusk'")
        board.append(WindowPrompt(text, cut))
    if not board:
        raise ValueError("give at least one prompt (one per line directs the windows in order)")
    if board[0].cut:
        raise ValueError(f"the first prompt line starts with {CUT}, but the first window starts from the prior "
                         f"already; remove {CUT} from it (cuts start later windows from a new prior)")
    return [board[k] if k < len(board) else WindowPrompt(board[-1].text) for k in range(windows)]


def window_prompts(prompts: str | list[str], windows: int) -> list[str]:
    """One prompt per window (`storyboard`'s texts): a list, or a text with one prompt per line; the last one repeats
    when short. ValueError as `storyboard`."""
    return [p.text for p in storyboard(prompts, windows)]


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


def check_context_frames(context_frames: int, window_frames: int | None = None) -> int:
    """`context_frames` (N) when it is one of CONTEXT_FRAMES and, given a window length F, shorter than it (each
    window must add frames of its own), else ValueError naming the value and the way out."""
    if isinstance(context_frames, bool) or context_frames not in CONTEXT_FRAMES:
        raise ValueError(f"context_frames must be one of {', '.join(map(str, CONTEXT_FRAMES))} (1 to 4 latent "
                         f"frames), got {context_frames!r}")
    if window_frames is not None and context_frames >= window_frames:
        raise ValueError(f"context_frames {context_frames} is not shorter than the window ({window_frames} frames): "
                         f"each window re-renders its {context_frames} context frames and must add new ones. Use "
                         f"windows of at least {context_frames + 4} frames or fewer context frames")
    return context_frames


def clip_context(context_frames: int, clip_frames: int) -> int:
    """The context a clip of `clip_frames` frames can give: N, or for a shorter clip its largest 4k+1 length."""
    return min(context_frames, (clip_frames - 1) // 4 * 4 + 1)


@dataclass(frozen=True)
class WindowPlan:
    """The frame layout of a long video of `windows` windows of `window_frames` (F) frames, each later window
    conditioned on the last `context_frames` (N) frames; `start_frames` (S > 0) when it extends a clip of S frames
    (then window 0 continues the clip's last frames, `clip_context`), written first when `include_start`; `cuts`:
    the windows (1..windows-1) that start a new shot from a new prior (rendered like window 0 of an image start).
    Every value is checked on construction (ValueError); a single window from an image (a plain clip) may have any
    clip length."""

    windows: int
    window_frames: int
    context_frames: int = 1
    start_frames: int = 0
    include_start: bool = False
    cuts: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self):
        object.__setattr__(self, "cuts", frozenset(self.cuts))
        check_windows(self.windows)
        if self.windows > 1 or self.start_frames:  # seams to cross: the long video's lengths
            check_window_frames(self.window_frames)
            check_context_frames(self.context_frames, self.window_frames)
        else:  # a single clip from an image (the CLI's generate): any clip length
            latent_frames(self.window_frames)
            check_context_frames(self.context_frames)
        if isinstance(self.start_frames, bool) or not isinstance(self.start_frames, int) or self.start_frames < 0:
            raise ValueError(f"start_frames must be a whole number >= 0, got {self.start_frames!r}")
        if self.include_start and not self.start_frames:
            raise ValueError("include_start writes the frames of a start clip first; there is no start clip")
        if any(isinstance(k, bool) or not isinstance(k, int) or not 0 < k < self.windows for k in self.cuts):
            raise ValueError(f"cuts must be windows 1 to {self.windows - 1}, got {sorted(self.cuts)}")

    @property
    def from_clip(self) -> bool:
        return self.start_frames > 0

    def context(self, window: int) -> int:
        """The frames window `window` is conditioned on: 1 (the start image) or the clip's context for window 0,
        1 (its new prior) for a cut, N for every later one (the video so far always holds N frames: F > N)."""
        if window in self.cuts:
            return 1
        if window > 0:
            return self.context_frames
        return clip_context(self.context_frames, self.start_frames) if self.from_clip else 1

    def dropped(self, window: int) -> int:
        """Frames at the start of window `window` that repeat its context, not written: none for window 0 of an
        image start or a cut (frame 0 is the image as the model renders it), the context otherwise."""
        return 0 if window in self.cuts or (window == 0 and not self.from_clip) else self.context(window)

    def new_frames(self, window: int) -> int:
        return self.window_frames - self.dropped(window)

    @property
    def total(self) -> int:
        """Frames written: the start clip's (if included) and every window's new ones."""
        return self.start_frames * self.include_start + sum(self.new_frames(k) for k in range(self.windows))

    def seams(self) -> list[int]:
        """Indices, in the written video, of the first frame of each window that follows written frames (every
        window after the first; window 0 too when the start clip is written before it), cuts left out (a new shot
        is meant to change the picture): `seams.measure_seams`."""
        return [start for k, start in enumerate(self.window_starts()) if start and k not in self.cuts]

    def window_starts(self) -> list[int]:
        """Index, in the written video, of each window's first written frame."""
        starts, position = [], self.start_frames * self.include_start
        for k in range(self.windows):
            starts.append(position)
            position += self.new_frames(k)
        return starts


def windows_for(seconds: float, fps: float, window_frames: int = 81, context_frames: int = 1,
                start_frames: int = 0) -> int:
    """Windows needed for at least `seconds` of new video (the start clip, if any, not counted). ValueError for a
    duration outside (0, MAX_SECONDS], an fps outside (0, 240] (NaN and inf included) or a bad length."""
    check_window_frames(window_frames)
    check_context_frames(context_frames, window_frames)
    first = WindowPlan(1, window_frames, context_frames, start_frames).new_frames(0)
    if not (0 < fps <= 240):
        raise ValueError(f"fps must be a number in (0, 240], got {fps!r}")
    if not (0 < seconds <= MAX_SECONDS):
        raise ValueError(f"the duration must be a number of seconds in (0, {MAX_SECONDS:g}], got {seconds!r}")
    return 1 + max(0, math.ceil((seconds * fps - first) / (window_frames - context_frames)))


def count_windows(duration: float, unit: str, fps: float, window_frames: int, context_frames: int = 1,
                  start_frames: int = 0) -> int:
    """The number of windows of a long video whose `duration` is counted in `unit` ("seconds" of new video, or
    "windows": a fractional count is rounded, at least 1), validated with one clear ValueError for every caller (the
    CLI's --seconds / --windows, the Long Video node's duration)."""
    if unit == "seconds":
        return windows_for(duration, fps, window_frames, context_frames, start_frames)
    if unit != "windows":
        raise ValueError(f"unit must be 'seconds' or 'windows', got {unit!r}")
    check_window_frames(window_frames)
    check_context_frames(context_frames, window_frames)
    if not (0 < duration <= MAX_WINDOWS):  # NaN and inf fail here, before round()
        raise ValueError(f"the number of windows must be a whole number from 1 to {MAX_WINDOWS}, got {duration!r}")
    return max(1, round(duration))
