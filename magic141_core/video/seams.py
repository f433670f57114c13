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

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

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
    seams: list[tuple[int, float]] = field(default_factory=list)  # (frame index, mean abs difference) per seam
    window_drift: list[float] = field(default_factory=list)  # per window: largest colour distance from its shot's start
    worst_frames: list[np.ndarray] = field(default_factory=list)  # [H, W, 3] 0..1 around the worst seam

    def seam_verdict(self) -> str:
        if not self.seam_count:
            return "no seam (a single window)"
        if self.within_diff < STILL:  # nothing moves inside the windows: the ratio divides by almost zero
            return "no visible seam" if self.seam_diff < INVISIBLE_CHANGE else "a visible jump at the seams"
        return ("good" if self.seam_ratio < RATIO_GOOD else "a small jump, seen when looking for it"
                if self.seam_ratio < RATIO_VISIBLE else "a visible jump at the seams")

    def drift_verdict(self) -> str:
        drift = self.max_color_drift
        return ("good" if drift < DRIFT_GOOD else "a slight shift, seen side by side" if drift < DRIFT_VISIBLE
                else "a visible colour shift")

    def summary(self) -> str:
        """Two lines, each a figure, what it means in plain words, the range that is good and the verdict."""
        ratio, seam, within = self.seam_ratio, self.seam_diff, self.within_diff
        if not self.seam_count:
            seams = "seam jump: none to measure, the video is a single window."
        elif within < STILL:
            judged = (f" The frames inside the windows hardly move (under 1/255 per frame: a still video, such as the "
                      f"untrained demo's), so the ratio is inflated and says little; judged by the seam change itself "
                      f"instead (under {INVISIBLE_CHANGE:.4f}, 2/255, is invisible): {self.seam_verdict()}.")
        else:
            judged = f" Here: {self.seam_verdict()}."
        if self.seam_count:
            seams = (f"seam jump {ratio:.2f}x: the first frame of each window changes {ratio:.2f} times as much "
                     f"from the frame before it as neighbouring frames inside a window do (mean absolute pixel change "
                     f"{seam:.4f} vs {within:.4f}, on a 0..1 scale). Good: about 1 (seams move like any other frame); "
                     f"under {RATIO_GOOD:g} is fine, {RATIO_GOOD:g}-{RATIO_VISIBLE:g} a small jump, over "
                     f"{RATIO_VISIBLE:g} a visible jump." + judged)
        colour = (f"max colour drift {self.max_color_drift:.4f}: the largest distance of a frame's average colour "
                  f"from the first frame's (RGB, 0..1 per channel). Good: under {DRIFT_GOOD:g} (no visible shift); "
                  f"{DRIFT_GOOD:g}-{DRIFT_VISIBLE:g} slight, seen side by side; over {DRIFT_VISIBLE:g} a visible "
                  f"colour shift. Here: {self.drift_verdict()}.")
        return seams + "\n" + colour

    def verdict(self) -> str:
        """One line in words: the seams' and the colour's verdicts, with the worst seam and the largest drift."""
        worst = max(self.seams, key=lambda s: s[1], default=None)
        where = "" if worst is None or self.within_diff <= 0 else \
            f"; the worst at frame {worst[0]}, {worst[1] / self.within_diff:.2f}x the motion inside windows"
        return (f"Seams: {self.seam_verdict()} ({self.seam_ratio:.2f}x on average over {self.seam_count}{where}). "
                f"Colour: {self.drift_verdict()} (largest drift {self.max_color_drift:.4f}).")

    def details(self) -> str:
        """Per seam its jump against the motion inside windows, per window its colour drift: one line each."""
        within = self.within_diff
        ratio = (lambda diff: diff / within) if within > 0 else (lambda diff: float("inf"))
        lines = [f"seam {i + 1} at frame {frame}: change {diff:.4f}, {ratio(diff):.2f}x the motion inside windows "
                 f"({within:.4f})" for i, (frame, diff) in enumerate(self.seams)]
        lines += [f"window {k + 1}: colour drift {drift:.4f} from its shot's first frame"
                  for k, drift in enumerate(self.window_drift)]
        return "\n".join(lines)


def measure_seams(frames: Iterable, seams: Iterable[int], window_starts: Iterable[int] = (),
                  cuts: Iterable[int] = ()) -> SeamReport:
    """Frames: an iterable of [H, W, 3] arrays (uint8 or float 0..1), in order; seams: indices of the first frame of
    each window that follows written frames (`windows.WindowPlan.seams`); window_starts: each window's first frame
    (`WindowPlan.window_starts`), for the drift per window; cuts: the first frames of new shots, where the colour
    reference starts again (a cut is neither a seam nor motion inside a window: its change is not measured). Also
    keeps the two frames before and after the worst seam. ValueError if fewer than two frames lie inside windows."""
    seams, starts, cuts = set(seams), set(window_starts), set(cuts)
    previous, seam_diffs, within_diffs, colors, drift = None, [], [], [], []
    recent, worst, shot_color = deque(maxlen=4), (-1.0, []), None
    for i, frame in enumerate(frames):
        frame = np.asarray(frame, dtype=np.float32)
        if frame.max() > 1.5:  # uint8 input
            frame = frame / 255.0
        colors.append(frame.reshape(-1, 3).mean(0))
        shot_color = colors[-1] if shot_color is None or i in cuts else shot_color
        if i in starts:
            drift.append(0.0)
        if drift:
            drift[-1] = max(drift[-1], float(np.linalg.norm(colors[-1] - shot_color)))
        recent.append(frame)
        if previous is not None and i not in cuts:  # a cut changes the picture on purpose: not measured
            diff = float(np.abs(frame - previous).mean())
            if i in seams:
                seam_diffs.append((i, diff))
            else:
                within_diffs.append(diff)
        if seam_diffs and seam_diffs[-1][0] == i - 1 and seam_diffs[-1][1] > worst[0]:  # two before, two from it
            worst = seam_diffs[-1][1], list(recent)
        previous = frame
    if seam_diffs and seam_diffs[-1][0] == i and seam_diffs[-1][1] > worst[0]:  # a seam on the last frame
        worst = seam_diffs[-1][1], list(recent)[-3:]
    if not within_diffs:
        raise ValueError("need at least two frames inside windows to compare seams against")
    colors = np.stack(colors)
    seam = float(np.mean([d for _, d in seam_diffs])) if seam_diffs else 0.0
    within = float(np.mean(within_diffs))
    return SeamReport(
        seam_ratio=seam / within if within > 0 else float("inf"),
        seam_diff=seam, within_diff=within,
        max_color_drift=float(np.linalg.norm(colors - colors[0], axis=1).max()),
        mean_color=colors.round(4).tolist(), seam_count=len(seam_diffs), seams=seam_diffs, window_drift=drift,
        worst_frames=worst[1],
    )


def strip(frames: list[np.ndarray]) -> np.ndarray:
    """Frames [H, W, 3] side by side in one image [H, n x W, 3] (the worst seam: two before it, two from it)."""
    return np.concatenate(frames, axis=1) if frames else np.zeros((1, 1, 3), np.float32)
