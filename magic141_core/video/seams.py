"""Judging a long render: how visible the window seams are, and how far the colour drifts over time.

seam ratio = mean |frame[i] - frame[i-1]| at the first written frame of every window that follows written frames
(`windows.WindowPlan.seams`), divided by the same mean over all other consecutive pairs. 1.0 means seams move like any other frame; well above 1 is a visible jump.
colour drift = per-frame mean RGB over time; the report gives its largest distance from the first frame's.
Works streaming (frames are read once, one at a time).

`SeamReport.summary()` (printed by the CLI's `--report`) says in plain words what each figure means and which range is
good. The ranges are rules of thumb on 8-bit video, in steps of one grey level (1/255): a frame-to-frame change of
about 2/255 on average, or a shift of the whole frame's average colour under about 5/255 (0.02), is not noticeable
in motion. A ratio is meaningless when the frames inside the windows do not move (a still video, such as the
untrained demo's, gives "891x" for a seam of a few grey levels): the summary then judges the seam change itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# rules of thumb for the summary (see the module docstring), in 0..1 pixel units
STILL = 1 / 255  # mean change between frames inside windows below one grey level: a still video
INVISIBLE_CHANGE = 2 / 255  # a seam's mean change below two grey levels is not seen
RATIO_GOOD, RATIO_VISIBLE = 1.5, 3.0  # seam ratio: fine below 1.5, a visible jump above 3
DRIFT_GOOD, DRIFT_VISIBLE = 0.02, 0.05  # average-colour distance: unseen below 0.02 (~5/255), visible above 0.05


@dataclass
class SeamReport:
    seam_ratio: float  # mean abs difference at seams / within windows
    seam_diff: float  # mean abs difference at seams (0..1 pixel units)
    within_diff: float  # mean abs difference between other consecutive frames
    max_color_drift: float  # largest distance of a frame's mean RGB from the first frame's (0..1 units)
    mean_color: list[list[float]]  # per-frame mean RGB
    seam_count: int = 1  # seams measured (windows - 1); 0: a single window, nothing to judge at seams

    def summary(self) -> str:
        """Two lines, each a figure, what it means in plain words, the range that is good and the verdict."""
        ratio, seam, within = self.seam_ratio, self.seam_diff, self.within_diff
        if not self.seam_count:
            seams = "seam jump: none to measure, the video is a single window."
        elif within < STILL:  # nothing moves inside the windows: the ratio divides by almost zero
            verdict = ("no visible seam" if seam < INVISIBLE_CHANGE else "a visible jump at the seams")
            judged = (f" The frames inside the windows hardly move (under 1/255 per frame: a still video, such as the "
                      f"untrained demo's), so the ratio is inflated and says little; judged by the seam change itself "
                      f"instead (under {INVISIBLE_CHANGE:.4f}, 2/255, is invisible): {verdict}.")
        else:
            verdict = ("good" if ratio < RATIO_GOOD else "a small jump, seen when looking for it"
                       if ratio < RATIO_VISIBLE else "a visible jump at the seams")
            judged = f" Here: {verdict}."
        if self.seam_count:
            seams = (f"seam jump {ratio:.2f}x: the first frame of each window changes {ratio:.2f} times as much "
                     f"from the frame before it as neighbouring frames inside a window do (mean absolute pixel change "
                     f"{seam:.4f} vs {within:.4f}, on a 0..1 scale). Good: about 1 (seams move like any other frame); "
                     f"under {RATIO_GOOD:g} is fine, {RATIO_GOOD:g}-{RATIO_VISIBLE:g} a small jump, over "
                     f"{RATIO_VISIBLE:g} a visible jump." + judged)
        drift = self.max_color_drift
        verdict = ("good" if drift < DRIFT_GOOD else "a slight shift, seen side by side" if drift < DRIFT_VISIBLE
                   else "a visible colour shift")
        colour = (f"max colour drift {drift:.4f}: the largest distance of a frame's average colour from the first "
                  f"frame's (RGB, 0..1 per channel). Good: under {DRIFT_GOOD:g} (no visible shift); "
                  f"{DRIFT_GOOD:g}-{DRIFT_VISIBLE:g} slight, seen side by side; over {DRIFT_VISIBLE:g} a visible "
                  f"colour shift. Here: {verdict}.")
        return seams + "\n" + colour


def measure_seams(frames: Iterable, seams: Iterable[int]) -> SeamReport:
    """Frames: an iterable of [H, W, 3] arrays (uint8 or float 0..1), in order; seams: indices of the first frame of
    each window that follows written frames (`windows.WindowPlan.seams`). ValueError if fewer than two frames lie
    inside windows."""
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
        mean_color=colors.round(4).tolist(), seam_count=len(seam_diffs),
    )
