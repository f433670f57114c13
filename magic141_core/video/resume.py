"""Long videos that can be continued: written window by window with their sidecar (`video.sidecar`), and resumed or
re-rolled from any window.

`LongVideoFile` is the long-video runner's writer (CLI `long` and the Long Video node): each window's new frames
become their own MP4 in the sidecar folder and, once the window is done, its hand-over is stored and record.json
rewritten, so a stop at any moment (Cancel, a crash, a full disk) loses at most the window being rendered. At the
end the windows are joined packet for packet into the video (`mp4.join_mp4`); a stopped run joins the finished ones
into `<stem>_partial.mp4`, as before.

Continuing a recorded video (`LongVideoFile.resume`) writes a new video and a new sidecar (nothing of the old ones
is written over): the windows before k are reused as they were encoded (their files hard-linked into the new
sidecar, not rendered again), window k starts from exactly the hand-over it had (`Handover`), and windows k.. are
rendered with the new run's prompts, seed and sampling settings. `first_window` chooses k: the first unfinished
window (resume), or any finished one (re-roll).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..runtime.atomic import atomic_path, next_free, refuse_existing
from .long_video import Handover, LongVideoSettings, WindowDone
from .mp4 import iter_mp4, join_mp4, to_uint8, write_mp4
from .sidecar import JOINS, RECORD, SAMPLING, FileRef, Record, RecordError, SidecarReader, handover_meta, \
    sidecar_folder, stored_context, write_record, write_state
from .windows import WindowPlan, WindowPrompt

log = logging.getLogger(__name__)


def first_window(old: SidecarReader, window: int | None) -> int:
    """The window (0-based) a continued video renders first: `window` (a re-roll; from 0 to the finished count), or
    for None the first unfinished one (a resume). RecordError when there is nothing to resume or `window` is past
    the finished windows."""
    done, asked = len(old.record.windows), len(old.record.board)
    if window is None:
        if done == asked and old.record.complete:
            raise RecordError(f"all {asked} windows of {old.folder.name} are finished and joined into "
                              f"{old.record.video}; nothing to resume. To render windows again, re-roll from one "
                              f"(1 to {asked})")
        return done
    if not 0 <= window <= done:
        raise RecordError(f"window {window + 1} cannot be re-rolled: {old.folder.name} holds {done} finished "
                          f"window{'s' * (done != 1)} of {asked}, so re-roll from window 1 to {done + 1}")
    return window


def continued_board(old: SidecarReader, first: int, board: list[WindowPrompt] | None,
                    windows: int | None = None) -> list[WindowPrompt]:
    """The storyboard of a continued video: the finished windows before `first` as made, then `board`'s windows
    (or the recorded ones) from `first` on; `windows` (default: as recorded) sets the length."""
    windows = windows or (len(board) if board is not None else len(old.record.board))
    if windows <= first:
        raise RecordError(f"the continued video would have {windows} window{'s' * (windows != 1)}, so nothing is "
                          f"left to render from window {first + 1}; ask for more windows")
    made = [WindowPrompt(w["prompt"], w["cut"]) for w in old.record.windows[:first]]
    later = board if board is not None else [WindowPrompt(**entry) for entry in old.record.board]
    later = [later[k] if k < len(later) else WindowPrompt(later[-1].text) for k in range(windows)]  # repeats: no cut
    return made + later[first:]


def known_shots(old: SidecarReader, board: list[WindowPrompt]) -> set[int]:
    """The cut windows of a continued `board` whose prior the sidecar holds: cuts recorded with the same prompt."""
    return {int(k) for k in old.record.shots if int(k) < len(board) and board[int(k)].cut
            and board[int(k)].text == old.record.board[int(k)]["text"]}


def check_continues(old: SidecarReader, settings: LongVideoSettings, width: int, height: int, window_frames: int,
                    start_frames: int, prior: torch.Tensor | None = None) -> None:
    """RecordError unless this run can continue the recorded video: the same size, window length, start clip, the
    settings that shape how windows join (`sidecar.JOINS`) and the same prior (None: not compared). Prompts, the
    seed, steps, shift, guidance and cfg may differ (they shape only the windows rendered now). The models:
    `check_models`."""
    record, ours = old.record, dataclasses.asdict(settings)
    differs = [f"size {width}x{height} (recorded {record.width}x{record.height})"
               for _ in [0] if (width, height) != (record.width, record.height)]
    differs += [f"{name} {value} (recorded {recorded})" for name, value, recorded in
                [("window_length", window_frames, record.window_frames), ("start clip frames", start_frames,
                                                                          record.start_frames)]
                + [(name, ours[name], record.settings[name]) for name in JOINS] if value != recorded]
    if differs:
        raise RecordError(f"this run differs from the video recorded in {old.folder.name} in: {', '.join(differs)}. A "
                          "video continues with the settings it was made with (only prompts, seed, steps, shift, "
                          "guidance and cfg may change): set them back, or start a new video")
    if prior is not None and not torch.equal(old.priors()[0], prior.float().cpu()):
        raise RecordError(f"the prior image is not the one {old.folder.name} was made with; connect that image (or "
                          "start a new video from this one)")


def check_models(old: SidecarReader, models: dict[str, str]) -> None:
    """RecordError unless `models` ({role: `sidecar.fingerprint`}) are the ones the recorded video was made with."""
    for role, print_ in models.items():
        if old.record.models.get(role, "") != print_:
            raise RecordError(f"{old.folder.name} was made with another {role} (fingerprint "
                              f"{old.record.models.get(role) or 'none'}, this one {print_ or 'none'}: other weights, "
                              "another precision or other LoRAs): windows of two models do not join. Load the model "
                              "as it was made with, or start a new video")


class LongVideoFile:
    """A long video being written to `path` with its sidecar; use as a context manager around
    `generate_long_video(..., write=file.write, on_window=file.window_done, plan=file.plan, shots=file.shots,
    resume=file.handover)`. Leaving it normally joins the windows into `path`; an exception joins the finished ones
    into `<stem>_partial.mp4` (and keeps the sidecar, from which the run resumes)."""

    def __init__(self, path: Path, record: Record, plan: WindowPlan, handover: Handover, prior: torch.Tensor,
                 shots: dict[int, torch.Tensor], metadata: dict | None):
        self.path, self.folder, self.record, self.plan = Path(path), sidecar_folder(path), record, plan
        self.handover, self.prior, self.shots, self.metadata = handover, prior, shots, metadata or {}
        self.reused = len(record.windows)  # windows taken from an earlier video
        self._pending: tuple[str, Path] | None = None  # (frames hash, segment file) of the window being written
        self.partial: Path | None = None

    @staticmethod
    def _record(path: Path, plan: WindowPlan, settings: LongVideoSettings, board: list[WindowPrompt],
                prior: torch.Tensor, shots: dict[int, str], models: dict[str, str]) -> Record:
        return Record(video=Path(path).name, width=prior.shape[2], height=prior.shape[1],
                      window_frames=plan.window_frames, start_frames=plan.start_frames,
                      settings=dataclasses.asdict(settings), models=dict(models),
                      board=[dataclasses.asdict(p) for p in board], shots={str(k): v for k, v in shots.items()},
                      start={})

    @classmethod
    def create(cls, path, settings: LongVideoSettings, board: list[WindowPrompt], prior: torch.Tensor,
               window_frames: int, *, start_clip: torch.Tensor | None = None, shots: dict | None = None,
               shot_sources: dict[int, str] | None = None, models: dict[str, str] | None = None,
               metadata: dict | None = None) -> LongVideoFile:
        """A new long video at `path` (which must not exist) of len(board) windows from `prior` [1, H, W, 3] (and
        `start_clip`, written first with `settings.include_start`); `shots`: {cut window: prior image}, the cuts of
        `board`. Writes the sidecar's start files before anything is rendered."""
        shots = dict(shots or {})
        plan = WindowPlan(len(board), window_frames, settings.context_frames,
                          0 if start_clip is None else len(start_clip), settings.include_start,
                          frozenset(k for k, p in enumerate(board) if p.cut))
        if set(shots) != set(plan.cuts):
            raise ValueError(f"a prior image is needed for each cut {sorted(plan.cuts)}, got {sorted(shots)}")
        record = cls._record(path, plan, settings, board, prior, shot_sources or {}, models or {})
        handover = Handover.start(prior, start_clip, plan)
        with cls._new_folder(path) as folder:
            segment = None
            if plan.include_start:
                segment = dataclasses.asdict(FileRef.of(write_mp4(folder / "start.mp4", to_uint8(start_clip),
                                                                  settings.fps, settings.quality)))
            state = write_state(folder / "start.safetensors", cls._start_tensors(prior, shots, handover))
            record.start = {"state": dataclasses.asdict(state), "segment": segment,
                            "handover": handover_meta(handover)}
            write_record(folder, record)
        return cls(path, record, plan, handover, prior, shots, metadata)

    @classmethod
    def resume(cls, path, old: SidecarReader, first: int, settings: LongVideoSettings, board: list[WindowPrompt], *,
               shots: dict | None = None, shot_sources: dict[int, str] | None = None,
               models: dict[str, str] | None = None, metadata: dict | None = None) -> LongVideoFile:
        """A new video at `path` continuing `old` (checked with `check_continues` by the caller): windows before
        `first` reused from it, the rest rendered by this run; `board` from `continued_board`; `shots`: the prior
        image of each cut at or after `first` (earlier ones come from `old`)."""
        prior, recorded_shots = old.priors()
        kept = {k for k in recorded_shots if k < first} | known_shots(old, board)  # unchanged cuts keep their prior
        shots = {**{k: recorded_shots[k] for k in kept}, **(shots or {})}
        sources = {**{k: old.record.shots[str(k)] for k in kept}, **(shot_sources or {})}
        plan = old.record.plan(len(board), frozenset(k for k, p in enumerate(board) if p.cut))
        if set(shots) != set(plan.cuts):
            raise ValueError(f"a prior image is needed for each cut {sorted(plan.cuts)}, got {sorted(shots)}")
        handover = old.handover(first)
        reused = old.segments(first) + [old.state(k) for k in range(first)]  # checked before anything is written
        same_shots = shots.keys() == recorded_shots.keys() and all(torch.equal(shots[k], recorded_shots[k])
                                                                    for k in shots)
        if same_shots:
            reused.append(old.state(-1))
        record = cls._record(path, plan, settings, board, prior, sources, models or old.record.models)
        with cls._new_folder(path) as folder:
            if same_shots:
                state = old.record.start["state"]
            else:  # other cuts from `first` on: the start file holds every shot's prior
                state = dataclasses.asdict(write_state(folder / "start.safetensors",
                                                       cls._start_tensors(prior, shots, old.handover(0))))
            for file in reused:
                _reuse(file, folder / file.name)
            record.start = {"state": state, "segment": old.record.start["segment"],
                            "handover": old.record.start["handover"]}
            record.windows = [dict(w) for w in old.record.windows[:first]]
            write_record(folder, record)
        log.info("continuing %s from window %d: %d window(s) reused", old.folder, first + 1, first)
        return cls(path, record, plan, handover, prior, shots, metadata)

    @staticmethod
    @contextmanager
    def _new_folder(path) -> Iterator[Path]:
        """The new sidecar folder of the video `path` (neither may exist), removed again if filling it fails."""
        folder = sidecar_folder(path)
        refuse_existing(path, "video")
        refuse_existing(folder, "sidecar")
        folder.mkdir(parents=True)
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @staticmethod
    def _start_tensors(prior, shots, handover: Handover) -> dict[str, torch.Tensor]:
        return {"prior": prior.float().cpu(), "context": stored_context(handover.context.cpu()),
                **{f"shot_{k}": image.float().cpu() for k, image in shots.items()}}

    @property
    def prompts(self) -> list[str]:
        """Every window's prompt, in order (what the runner is given)."""
        return [entry["text"] for entry in self.record.board]

    def write(self, frames: torch.Tensor) -> None:
        """The new frames [f, H, W, 3] uint8 of the next window: encoded on their own into the sidecar."""
        k = len(self.record.windows)
        frames = to_uint8(frames)
        digest = hashlib.sha256(frames.numpy().tobytes()).hexdigest()
        self._pending = (digest, write_mp4(self.folder / f"window_{k:04d}.mp4", frames, self.record.settings["fps"],
                                           self.record.settings["quality"]))

    def window_done(self, done: WindowDone) -> None:
        """Store the finished window's hand-over and record it (the window now survives any stop)."""
        digest, segment = self._pending
        k, settings = done.index, self.record.settings
        state = write_state(self.folder / f"window_{k:04d}.safetensors",
                            {"context": stored_context(done.handover.context.cpu())})
        board = self.record.board[k]
        self.record.windows.append({
            "prompt": board["text"], "cut": board["cut"], **{name: settings[name] for name in SAMPLING},
            "frames": self.plan.new_frames(k), "frames_sha256": digest, "segment": dataclasses.asdict(FileRef.of(
                segment)), "state": dataclasses.asdict(state), "handover": handover_meta(done.handover)})
        self._pending = None
        write_record(self.folder, self.record)

    def parts(self) -> list[Path]:
        """The MP4 files of the start clip (if written) and of every finished window, in order."""
        start = [self.folder / self.record.start["segment"]["name"]] if self.record.start["segment"] else []
        return start + [self.folder / w["segment"]["name"] for w in self.record.windows]

    def reused_frames(self) -> Iterator[np.ndarray]:
        """The frames of the start clip and the reused windows as the video holds them (decoded, uint8 [H, W, 3])."""
        for part in self.parts()[: bool(self.record.start["segment"]) + self.reused]:
            yield from iter_mp4(part)[0]

    def close(self) -> Path:
        """Join every window into the video and mark the record complete; returns the video's path."""
        if len(self.record.windows) != self.plan.windows:
            raise RuntimeError(f"{len(self.record.windows)} of {self.plan.windows} windows are finished")
        join_mp4(self.parts(), self.path, self.metadata)
        self.record.complete = True
        write_record(self.folder, self.record)
        return self.path

    def abort(self) -> Path | None:
        """After a stop: drop the unfinished window's file, join the finished windows into `<stem>_partial.mp4`
        (None when there are none, or that fails: the sidecar keeps them either way). A stop before any window was
        finished leaves nothing: its sidecar is removed too (it would only repeat the start)."""
        if self._pending is not None:
            self._pending[1].unlink(missing_ok=True)
        if not self.record.windows:
            shutil.rmtree(self.folder, ignore_errors=True)
            return None
        try:
            self.partial = join_mp4(self.parts(), next_free(self.path.with_name(f"{self.path.stem}_partial.mp4")),
                                    self.metadata)
        except (OSError, RuntimeError) as e:  # a full disk: the sidecar still holds every finished window
            log.warning("could not join the finished windows into a partial video: %s", e)
        return self.partial

    def __enter__(self) -> LongVideoFile:
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def _reuse(source: Path, target: Path) -> None:
    """`target` as the same bytes as `source`: a hard link (no copy) where the file system allows, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        with atomic_path(target, needed=source.stat().st_size) as tmp:
            shutil.copyfile(source, tmp)


__all__ = ["LongVideoFile", "RECORD", "check_continues", "check_models", "continued_board", "first_window",
           "known_shots"]
