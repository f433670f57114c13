"""Judging a long render: how visible the window seams are, and how far the colour drifts over time.

seam ratio = mean |frame[i] - frame[i-1]| at the first frame of every window after the first, divided by the same
mean over all other consecutive pairs. 1.0 means seams move like any other frame; well above 1 is a visible jump.
colour drift = per-frame mean RGB over time; the report gives its largest distance from the first frame's.
Works streaming (frames are read once, one at a time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass
class SeamReport:
    seam_ratio: float  # mean abs difference at seams / within windows
    seam_diff: float  # mean abs difference at seams (0..1 pixel units)
    within_diff: float  # mean abs difference between other consecutive frames
    max_color_drift: float  # largest distance of a frame's mean RGB from the first frame's (0..1 units)
    mean_color: list[list[float]]  # per-frame mean RGB

    def summary(self) -> str:
        return (f"seam jump {self.seam_ratio:.2f}x the within-window motion "
                f"({self.seam_diff:.4f} vs {self.within_diff:.4f}); max colour drift {self.max_color_drift:.4f}")


def seam_frames(window_frames: int, windows: int) -> list[int]:
    """Indices of the first new frame of windows 2..N in a video of windows that share their seam frame."""
    return [1 + (window_frames - 1) * k for k in range(1, windows)]


def measure_seams(frames: Iterable, seams: Iterable[int]) -> SeamReport:
    """Frames: an iterable of [H, W, 3] arrays (uint8 or float 0..1), in order."""
    seams = set(seams)
    previous, seam_diffs, within_diffs, colors = None, [], [], []
    for i, frame in enumerate(frames):
        frame = np.asarray(frame, dtype=np.float32)
        if frame.max() > 1.5:  # uint8 input
            frame = frame / 255.0
        colors.append(frame.reshape(-1, 3).mean(0))
        if previous is not None:
            (seam_diffs if i in seams else within_diffs).append(float(np.abs(frame - previous).mean()))
        previous = frame
    if not within_diffs:
        raise ValueError("need at least two frames inside windows to compare seams against")
    colors = np.stack(colors)
    seam = float(np.mean(seam_diffs)) if seam_diffs else 0.0
    within = float(np.mean(within_diffs))
    return SeamReport(
        seam_ratio=seam / within if within > 0 else float("inf"),
        seam_diff=seam, within_diff=within,
        max_color_drift=float(np.linalg.norm(colors - colors[0], axis=1).max()),
        mean_color=colors.round(4).tolist(),
    )
