"""The sidecar of a long video: what is needed to continue it from any window, kept beside its MP4.

For `<stem>.mp4` the sidecar is the folder `<stem>.m141/`:

    record.json              what was asked and made: size, settings, the models' fingerprints, the storyboard, and
                             per finished window its prompt, seed, sampling settings, shot, frame count, the SHA-256 of
                             its frames and of each file below; a checksum over all of it
    start.safetensors        "prior" [1, H, W, 3] float32 (window 0's start image and identity anchor), "shot_<k>" per
                             cut window k, "context": what window 0 continues (the prior, or a start clip's last frames)
    start.mp4                the start clip, when it is written first (include_start)
    window_<k>.mp4           window k's new frames, encoded on their own (one x264 run, a closed GOP): the video is
                             these files joined packet for packet (`mp4.join_mp4`), so a window reused in a new file
                             decodes to the same pixels, and a resumed run's file equals an uninterrupted one's
    window_<k>.safetensors   "context": the hand-over to window k + 1 (the video's last N frames: uint8 when they are
                             8-bit frames, float32 otherwise); its colour anchor and counts are in record.json

Reading trusts nothing: record.json is read within `MAX_RECORD_BYTES`, its checksum must match (an edited record is
refused), every field is checked, a file is named by a bare name inside the folder (links out refused), its size is
checked against the record (and a budget from the video size) before it is read, and its SHA-256 before it is used.
Every problem is one `RecordError` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path

import torch

from ..priors import file_inside
from ..runtime.atomic import atomic_path
from ..runtime.text_file import MAX_PROMPT_BYTES, read_text
from ..sampling.noise import check_seed
from ..sampling.sampler import latent_shape
from ..sampling.schedule import flow_sigmas
from ..weights.files import CheckpointError, open_state_dict, save_safetensors
from .color import ColorStats
from .long_video import Handover, LongVideoSettings
from .windows import MAX_WINDOWS, WindowPlan, WindowPrompt

FORMAT, VERSION = "magic141-long-video", 1
SUFFIX, RECORD = ".m141", "record.json"
MAX_RECORD_BYTES = 16 << 20  # the storyboard (at most MAX_PROMPT_BYTES) and per window a few hundred bytes
_NAME = re.compile(r"^(start|window_\d{4,})\.(mp4|safetensors)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
SAMPLING = ("seed", "steps", "shift", "guidance", "cfg")  # what may change from one window to the next (a re-roll)
JOINS = ("context_frames", "fps", "quality", "color_match", "color_anchor", "noise_augmentation", "anchor",
         "include_start")  # settings that shape how windows join: fixed for a video


class RecordError(ValueError):
    """A long video's sidecar that cannot be used, with what is wrong and what to do."""


def sidecar_folder(video: str | Path) -> Path:
    """The sidecar folder of the video file `video`: `<stem>.m141` beside it."""
    return Path(video).with_suffix(SUFFIX)


def locate_sidecar(path: str | Path) -> Path:
    """The sidecar a user names: the folder itself, its record.json, or the video (`<stem>.mp4`, or the partial video
    of a stopped run, `<stem>_partial.mp4` / `<stem>_partial_2.mp4`)."""
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        return path
    return path.with_name(re.sub(r"_partial(_\d+)?$", "", path.stem) + SUFFIX)


def fingerprint(model) -> str:
    """A short hash of a model's parameters (shapes, dtypes and their first values): equal for the same weights,
    different for another model or a LoRA merged in. "" for None or a model without parameters (stand-ins)."""
    if model is None or not hasattr(model, "parameters"):
        return ""
    digest, count = hashlib.sha256(), 0
    for p in model.parameters():
        digest.update(f"{tuple(p.shape)}{p.dtype};".encode())
        if type(p.data) is torch.Tensor and p.device.type != "meta" and p.numel():  # quantized tensors: shape only
            digest.update(p.detach().reshape(-1)[:16].float().cpu().numpy().tobytes())
        count += 1
    return digest.hexdigest()[:16] if count else ""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def handover_meta(handover: Handover) -> dict:
    """The JSON part of a hand-over (its context tensor is stored beside it): exact, floats round-trip."""
    return {"window": handover.window, "frames_written": handover.frames_written, "from_video": handover.from_video,
            "anchor": handover.color_anchor.mean.tolist() + handover.color_anchor.std.tolist(),
            "context": [*handover.context.shape[:3]], "dtype": context_dtype(handover.context)}


def context_dtype(context: torch.Tensor) -> str:
    """"uint8" when the float frames are exactly 8-bit values (stored 4x smaller, read back bit for bit)."""
    return "uint8" if torch.equal((context * 255).round() / 255, context) else "float32"


def stored_context(context: torch.Tensor) -> torch.Tensor:
    return (context * 255).round().to(torch.uint8) if context_dtype(context) == "uint8" else context.float()


@dataclasses.dataclass
class FileRef:
    """A file of the sidecar: its bare name, size in bytes and SHA-256."""

    name: str
    bytes: int
    sha256: str

    @staticmethod
    def of(path: Path) -> FileRef:
        return FileRef(path.name, path.stat().st_size, sha256_file(path))


@dataclasses.dataclass
class Record:
    """record.json as data (see the module docstring). `windows`: the finished windows in order; `board`: every
    window asked (prompt and cut); `settings`: the run's (the sampling ones of window k are in `windows[k]`)."""

    video: str
    width: int
    height: int
    window_frames: int
    start_frames: int
    settings: dict
    models: dict
    board: list
    shots: dict  # window (str) -> where its prior came from (words)
    start: dict  # {"state": FileRef, "segment": FileRef | None, "handover": handover_meta}
    windows: list = dataclasses.field(default_factory=list)
    complete: bool = False

    def plan(self, windows: int | None = None, cuts=None) -> WindowPlan:
        return WindowPlan(windows or len(self.board), self.window_frames, self.settings["context_frames"],
                          self.start_frames, self.settings["include_start"],
                          frozenset(int(k) for k in self.shots) if cuts is None else cuts)

    def to_json(self) -> str:
        body = dataclasses.asdict(self)
        return json.dumps({"format": FORMAT, "version": VERSION, "checksum": hashlib.sha256(_canonical(body))
                           .hexdigest(), "record": body}, indent=1, ensure_ascii=False) + "\n"


def write_record(folder: Path, record: Record) -> None:
    """Write record.json in `folder` atomically, replacing the previous one (the sidecar's own file)."""
    text = record.to_json().encode()
    with atomic_path(folder / RECORD, overwrite=True, needed=len(text)) as tmp:
        tmp.write_bytes(text)


def write_state(path: Path, tensors: dict[str, torch.Tensor]) -> FileRef:
    """A new safetensors file of the sidecar (atomic), and its reference."""
    save_safetensors({k: v.detach().cpu().clone() for k, v in tensors.items()}, path)  # clone: no shared storage
    return FileRef.of(path)


class SidecarReader:
    """A sidecar read and checked (`read`); files are checked again (size, SHA-256, inside the folder) when used."""

    def __init__(self, folder: Path, record: Record, roots):
        self.folder, self.record, self.roots = folder, record, roots

    @staticmethod
    def read(path: str | Path, roots=None) -> SidecarReader:
        """The sidecar at `path` (its folder or its record.json); `roots`: the folders it may resolve into (default:
        the folder itself). Raises RecordError (or FileNotFoundError) with one message naming the problem."""
        path = Path(path)
        folder = path.parent if path.name == RECORD else path
        record_file = folder / RECORD
        if not record_file.is_file():
            raise FileNotFoundError(f"{path} is not a long video's sidecar (no {RECORD} in {folder}); give the "
                                    f"<name>{SUFFIX} folder written beside a long video's MP4")
        roots = [folder] if roots is None else roots
        try:
            file_inside(folder, roots)
            file_inside(record_file, roots)
        except ValueError:
            raise RecordError(f"{record_file} lies outside the allowed folders (a link pointing out?); refused. Give "
                              "a sidecar inside the output folder") from None
        return SidecarReader(folder, _parse(read_text(record_file, MAX_RECORD_BYTES, "the long video's record"),
                                            record_file), roots)

    def path(self, ref: dict | FileRef | None, budget: int) -> Path:
        """The file `ref` names, after checking it: a bare name, inside the folder, `bytes` within `budget`, the size
        on disk and the SHA-256 as recorded."""
        ref = FileRef(**ref) if isinstance(ref, dict) else ref
        file = self.folder / ref.name
        where = f"{self.folder.name}/{ref.name}"
        if ref.bytes > budget:
            raise RecordError(f"{where}: the record says {ref.bytes} bytes, more than a file of this video can hold "
                              f"({budget}); the record is damaged. {_FIX}")
        if not file.is_file():
            raise RecordError(f"{where} is missing; the sidecar is incomplete (moved or partly deleted). {_FIX}")
        try:
            file = file_inside(file, self.roots)
        except ValueError:
            raise RecordError(f"{where} is a link to a file outside the allowed folders; refused. {_FIX}") from None
        if file.stat().st_size != ref.bytes or sha256_file(file) != ref.sha256:
            raise RecordError(f"{where} is not the file the record names (its size or SHA-256 differs: truncated, "
                              f"replaced or edited). {_FIX}")
        return file

    def tensors(self, ref: dict, expected: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, torch.Tensor]:
        """The tensors of a state file, checked against `expected` {name: (shape, dtype)} before any is read."""
        budget = sum(math.prod(shape) * (1 if dtype == "uint8" else 4)
                     for shape, dtype in expected.values()) + (1 << 20)
        file = self.path(ref, budget)
        try:
            with open_state_dict(file, prefixes=()) as sd:
                found = {k: (tuple(sd.shape(k)), str(sd[k].dtype).removeprefix("torch.")) for k in sd} \
                    if set(sd) == set(expected) else None
                if found != {k: (tuple(s), d) for k, (s, d) in expected.items()}:
                    raise RecordError(f"{self.folder.name}/{file.name} does not hold the tensors the record names; "
                                      f"the sidecar is damaged. {_FIX}")
                out = {k: sd[k] for k in expected}
        except CheckpointError as e:
            raise RecordError(f"{self.folder.name}/{file.name}: {e}. {_FIX}") from None
        if any(v.is_floating_point() and not torch.isfinite(v).all() for v in out.values()):
            raise RecordError(f"{self.folder.name}/{file.name} holds NaN or infinite values. {_FIX}")
        return out

    @property
    def size(self) -> tuple[int, int, int]:
        return self.record.height, self.record.width, 3

    def handover(self, window: int) -> Handover:
        """The hand-over entering window `window` (0: the start; k: the one stored after window k - 1)."""
        source = self.record.start if window == 0 else self.record.windows[window - 1]
        meta = source["handover"]
        frames = self.tensors(source["state"], {"context": ((*meta["context"], 3), meta["dtype"]),
                                                **self._start_extra(window)})["context"]
        frames = frames.float() / 255 if frames.dtype == torch.uint8 else frames
        anchor = torch.tensor(meta["anchor"], dtype=torch.float32)
        return Handover(meta["window"], frames, ColorStats(anchor[:3], anchor[3:]), meta["frames_written"],
                        meta["from_video"])

    def _start_extra(self, window: int) -> dict:
        if window:
            return {}
        return {"prior": ((1, *self.size), "float32"),
                **{f"shot_{k}": ((1, *self.size), "float32") for k in self.record.shots}}

    def priors(self) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(window 0's prior [1, H, W, 3], {cut window: its shot's prior})."""
        meta = self.record.start["handover"]
        start = self.tensors(self.record.start["state"],
                             {"context": ((*meta["context"], 3), meta["dtype"]), **self._start_extra(0)})
        return start["prior"], {int(k): start[f"shot_{k}"] for k in self.record.shots}

    def state(self, window: int) -> Path:
        """The checked state file stored after window `window` (-1: the start file)."""
        record, pixels = self.record, self.record.width * self.record.height * 3 * 4
        if window < 0:
            return self.path(record.start["state"], (14 + len(record.shots)) * pixels + (1 << 20))
        return self.path(record.windows[window]["state"], 13 * pixels + (1 << 20))

    def segments(self, windows: int) -> list[Path]:
        """The checked MP4 files of the start clip (if written) and of the first `windows` windows, in order."""
        record, pixels = self.record, self.record.width * self.record.height * 3
        start = [self.path(record.start["segment"], record.start_frames * pixels + (1 << 20))] \
            if record.start["segment"] else []
        return start + [self.path(w["segment"], w["frames"] * pixels + (1 << 20)) for w in record.windows[:windows]]


_FIX = "Render the video again, or resume from an intact sidecar"


def _parse(text: str, file: Path) -> Record:
    """record.json's text -> a `Record`, every field checked (RecordError naming the file and the field)."""
    def bad(problem: str, fix: str = _FIX) -> RecordError:
        return RecordError(f"{file}: {problem}. {fix}")

    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise bad(f"is not valid JSON ({str(e)[:100]}): truncated or damaged") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f"is not a Magic141 long video record (format {FORMAT!r} expected)")
    if data.get("version") != VERSION:
        raise bad(f"was written by another version of the pack (record version {data.get('version')!r}, this one "
                  f"reads {VERSION})", "Resume it with the version that wrote it, or render the video again")
    body = data.get("record")
    if not isinstance(body, dict) or data.get("checksum") != hashlib.sha256(_canonical(body)).hexdigest():
        raise bad("was changed after it was written (its checksum does not match: edited by hand?), so it cannot "
                  "be trusted to continue the video bit for bit", "Use the record as the pack wrote it; to change "
                  "prompts or seeds, re-roll from a window instead")
    try:
        return _check(Record(**body))
    except (TypeError, KeyError, ValueError, IndexError, AttributeError) as e:
        raise bad(f"holds a field that is missing or out of range ({str(e)[:200]})") from None


def _check(record: Record) -> Record:
    """Every field of a parsed record within its range (ValueError naming it), files as `FileRef`s."""
    latent_shape(record.window_frames, record.height, record.width)
    settings = LongVideoSettings(**record.settings)  # every value checked
    plan = record.plan()
    if not 1 <= len(record.board) <= MAX_WINDOWS or len(record.windows) > len(record.board):
        raise ValueError(f"{len(record.windows)} windows finished of {len(record.board)} asked")
    WindowPlan(len(record.board), record.window_frames, settings.context_frames, record.start_frames,
               settings.include_start, plan.cuts)
    for entry in record.board:
        WindowPrompt(**entry)
        if not isinstance(entry["text"], str) or len(entry["text"]) > MAX_PROMPT_BYTES:
            raise ValueError("a prompt is not text within the prompt budget")
    if not all(isinstance(v, str) for v in [*record.models.values(), *record.shots.values()]):
        raise ValueError("models and shots must be text")
    _check_ref(record.start["state"])
    if record.start["segment"] is not None:
        _check_ref(record.start["segment"])
    _check_handover(record.start["handover"], 0, plan, record)
    for k, window in enumerate(record.windows):
        check_seed(window["seed"])
        flow_sigmas(window["steps"], window["shift"])
        if not all(isinstance(window[name], (int, float)) and math.isfinite(window[name]) and window[name] >= 0
                   for name in ("guidance", "cfg")) or not 0 <= window["frames"] == plan.new_frames(k) or \
                not _SHA256.match(window["frames_sha256"]):
            raise ValueError(f"window {k + 1}'s guidance, cfg, frame count or frame hash")
        for name in ("segment", "state"):
            _check_ref(window[name])
        _check_handover(window["handover"], k + 1, plan, record)
    return record


def _check_ref(ref: dict) -> None:
    ref = FileRef(**ref)
    if not isinstance(ref.name, str) or not _NAME.match(ref.name) or isinstance(ref.bytes, bool) or \
            not isinstance(ref.bytes, int) or ref.bytes < 0 or not isinstance(ref.sha256, str) or \
            not _SHA256.match(ref.sha256):
        raise ValueError(f"file {ref.name!r}: a bare file name of the sidecar, its size and SHA-256")


def _check_handover(meta: dict, window: int, plan: WindowPlan, record: Record) -> None:
    n, height, width = meta["context"]
    ok = (meta["window"] == window and meta["dtype"] in ("uint8", "float32") and isinstance(meta["from_video"], bool)
          and (height, width) == (record.height, record.width) and 1 <= n <= max(plan.context_frames, 1 + 4 * 3)
          and isinstance(meta["frames_written"], int) and meta["frames_written"] >= 0 and len(meta["anchor"]) == 6
          and all(isinstance(v, (int, float)) and math.isfinite(v) for v in meta["anchor"]))
    if not ok:
        raise ValueError(f"the hand-over to window {window + 1}")
