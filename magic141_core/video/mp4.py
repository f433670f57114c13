"""MP4 writing and reading with the ffmpeg binary that imageio-ffmpeg ships.

`Mp4Writer` streams frames into ffmpeg as they come (long videos never sit in memory) and writes to a temporary
file that is renamed into place only when the video is complete; an aborted write leaves no file, or, when asked,
a playable `*_partial.mp4` of the frames written so far. H.264 in yuv420p (plays everywhere); odd sizes are padded
to even. Colours are converted with one explicit standard, BT.709 matrix in limited ("tv") range, and the stream is
tagged with exactly that (matrix, range, primaries, transfer), so every player and decoder that honours the tags
(ffmpeg, PyAV and so ComfyUI's Load Video, browsers) shows the RGB that went in; untagged files are decoded as
BT.601 by some players and BT.709 by others (up to 22 RGB units apart). Metadata goes in as MP4 tags with `use_metadata_tags`, the way ComfyUI's own SaveVideo stores `prompt`
and `workflow`, so dropping the file onto ComfyUI restores the workflow.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from ..runtime.atomic import make_temp_beside, next_free, publish, refuse_existing, write_errno, write_error
from ..runtime.finite import VAE_ADVICE, NonFiniteOutput, is_finite

log = logging.getLogger(__name__)

# The one colour description of every MP4 the pack writes: ITU-R BT.709 matrix, primaries and transfer, limited
# range (Y 16-235). ffmpeg's names for it; `COLOR_FILTER` converts RGB with exactly this matrix and range and marks
# the frames so the encoder writes the same values into the H.264 VUI and the MP4 'colr' box. Both directions use
# swscale's exact rounding: its fast default path loses about 1 RGB unit per decode on saturated colours, which
# compounds over save/load cycles (5 cycles: up to 8 units; exact: 1, stable).
SWS_EXACT = ["-sws_flags", "accurate_rnd+full_chroma_int"]
COLOR_TAGS = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709", "color_range": "tv"}
COLOR_FILTER = ("scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd+full_chroma_int,format=yuv420p,"
                "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709")


# ffmpeg's words for the write failures `runtime.atomic.write_error` explains
_FFMPEG_ERRNOS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                  "File too large": errno.EFBIG, "Read-only file system": errno.EROFS,
                  "Permission denied": errno.EACCES}


def _ffmetadata(metadata: dict) -> str:
    """FFMETADATA1 text; values that are not strings are stored as JSON (as ComfyUI does)."""
    lines = [";FFMETADATA1"]
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        escaped = re.sub(r"([=;#\\\n])", r"\\\1", text)
        lines.append(f"{key}={escaped}")
    return "\n".join(lines) + "\n"


def ffmpeg_failure(error: str, what: str, path: Path, tmp: Path) -> Exception:
    """Why ffmpeg failed writing `path` (through the temporary file `tmp`), from its error output: a full disk or a
    write refused becomes `write_error` (the folder, the bytes free and written); anything else a RuntimeError
    quoting ffmpeg."""
    for text, number in _FFMPEG_ERRNOS.items():
        if text in error:
            return write_error(number, path, written=tmp.stat().st_size if tmp.exists() else None)
    return RuntimeError(f"ffmpeg {what} {path.name}: {error[-500:]}")


FRAMES_STAGE = "the frames to be written"  # a NaN would be written as a black pixel: refused, never converted


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float 0..1 -> uint8 on the CPU, rounded (as the video file stores it); uint8 passes through. Float frames
    holding NaN / inf raise `NonFiniteOutput` (they would become black pixels)."""
    frames = frames.detach()
    if frames.is_floating_point():
        if not is_finite(frames):
            raise NonFiniteOutput(f"{FRAMES_STAGE} hold NaN or infinite values ({frames.dtype})", VAE_ADVICE)
        frames = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.cpu()


def to_uint8_frames(frames) -> np.ndarray:
    """[F, H, W, 3] float 0..1 (tensor or array) or uint8 -> contiguous uint8 [F, H, W, 3]. Float frames holding
    NaN / inf raise `NonFiniteOutput`."""
    if isinstance(frames, torch.Tensor):
        frames = to_uint8(frames).numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"frames must be [F, H, W, 3] (RGB), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        if not np.isfinite(frames).all():
            raise NonFiniteOutput(f"{FRAMES_STAGE} hold NaN or infinite values ({frames.dtype})", VAE_ADVICE)
        frames = (np.clip(frames.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(frames[..., :3])


def check_settings(fps: float, crf: int) -> None:
    """ValueError unless 0 < fps <= 240 (NaN and inf refused) and crf is 0..51."""
    if not (0 < fps <= 240):
        raise ValueError(f"fps must be in (0, 240], got {fps}")
    if not (0 <= crf <= 51):
        raise ValueError(f"crf (quality) must be 0..51, got {crf}")


class Mp4Writer:
    """Stream RGB frames to an H.264 MP4. Use as a context manager; an exception inside aborts the file.

    `path` must not exist yet (`FileExistsError` naming it, raised here, before any work); frames go to a hidden
    temporary file beside it that becomes `path` only when complete.

    `crf`: x264 constant rate factor (0 lossless ... 51 worst; 17-23 is visually good).
    `keep_partial`: on abort, keep the frames written so far as `<stem>_partial.mp4` instead of deleting them.
    """

    def __init__(self, path, fps: float, crf: int = 19, metadata: dict | None = None, keep_partial: bool = False):
        check_settings(fps, crf)
        self.path, self.fps, self.crf = Path(path), fps, int(crf)
        self.metadata, self.keep_partial = metadata or {}, keep_partial
        refuse_existing(self.path, "video")  # before any frame is rendered, not after
        self.frames_written = 0
        self._proc = None
        self._size = None
        self._error = None  # ffmpeg's error output, once it failed
        try:
            self._tmp = make_temp_beside(self.path, ".partial.mp4")
        except OSError as e:  # a read-only or full folder: said before any frame is rendered
            if (number := write_errno(e)) is None:
                raise
            raise write_error(number, self.path) from None
        self._meta_file = None

    def _start(self, width: int, height: int):
        fd, meta = tempfile.mkstemp(suffix=".ffmeta")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_ffmetadata(self.metadata))
        self._meta_file = Path(meta)
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{self.fps}", "-i", "-",
            "-f", "ffmetadata", "-i", str(self._meta_file), "-map", "0:v", "-map_metadata", "1",
            "-vf", f"pad=ceil(iw/2)*2:ceil(ih/2)*2,{COLOR_FILTER}",
            "-c:v", "libx264", "-crf", str(self.crf), "-preset", "medium", "-pix_fmt", "yuv420p",
            *[arg for key, value in COLOR_TAGS.items() for arg in (f"-{key}", value)],
            "-movflags", "+faststart+use_metadata_tags", "-f", "mp4", str(self._tmp),
        ]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._size = (height, width)

    def write(self, frames) -> None:
        """Append frames [F, H, W, 3] (float 0..1 or uint8); every call must use the same size."""
        frames = to_uint8_frames(frames)
        if self._proc is None:
            self._start(frames.shape[2], frames.shape[1])
        elif frames.shape[1:3] != self._size:
            raise ValueError(f"frame size changed from {self._size} to {frames.shape[1:3]} within one video")
        try:
            self._proc.stdin.write(frames.tobytes())
        except BrokenPipeError:
            self._proc.wait()
            raise self._failure("stopped while writing") from None
        self.frames_written += len(frames)

    def _failure(self, what: str) -> Exception:
        if self._error is None:
            self._error = self._proc.stderr.read().decode(errors="replace").strip()
        return ffmpeg_failure(self._error, what, self.path, self._tmp)

    def _finish_ffmpeg(self) -> bool:
        if self._proc is None:
            return False
        try:
            self._proc.stdin.close()
        except BrokenPipeError:  # ffmpeg already stopped (a full disk): its exit status and message tell why
            pass
        ok = self._proc.wait() == 0
        if not ok:
            if self._error is None:
                self._error = self._proc.stderr.read().decode(errors="replace").strip()
            log.info("ffmpeg failed: %s", self._error[-500:])  # the error raised says why, in one line
        self._proc.stderr.close()
        return ok

    def close(self) -> Path:
        """Finish the video and move it into place; returns the final path. A full disk or a refused write raises
        OSError naming the folder and the bytes free (`runtime.atomic.write_error`); nothing is kept."""
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to {self.path.name}")
            if not self._finish_ffmpeg():
                raise self._failure("could not finish")
            try:
                return publish(self._tmp, self.path)  # never over an existing file
            except OSError as e:
                if (number := write_errno(e)) is None:
                    raise
                raise write_error(number, self.path) from None
        finally:
            self._cleanup()

    def abort(self) -> Path | None:
        """Stop writing. Returns the kept partial video's path, or None when nothing is kept."""
        try:
            finished = self._finish_ffmpeg()
            if self.keep_partial and finished and self.frames_written > 0:
                partial = next_free(self.path.with_name(f"{self.path.stem}_partial{self.path.suffix}"))
                return publish(self._tmp, partial)
            return None
        finally:
            self._cleanup()

    def _cleanup(self):
        self._tmp.unlink(missing_ok=True)
        if self._meta_file is not None:
            self._meta_file.unlink(missing_ok=True)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_mp4(path, frames, fps: float, crf: int = 19, metadata: dict | None = None) -> Path:
    """Write all `frames` [F, H, W, 3] at once (atomically)."""
    with Mp4Writer(path, fps, crf, metadata) as writer:
        writer.write(frames)
    return Path(path)


def _ffconcat(parts) -> str:
    """An ffmpeg concat-demuxer script naming `parts` by absolute path (a ' inside a path written as '\\'')."""
    quoted = (str(Path(part).absolute()).replace("'", "'\\''") for part in parts)
    return "ffconcat version 1.0\n" + "".join(f"file '{name}'\n" for name in quoted)


def _temp_text(text: str, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(name)


def join_mp4(parts: list[Path], path, metadata: dict | None = None) -> Path:
    """Join MP4 files written by `Mp4Writer` with the same size, rate and settings (a long video's windows) into a
    new file `path`, packet for packet (ffmpeg's concat demuxer, no re-encoding: every part decodes to the same frames
    in the joined file), with `metadata` as tags. Published atomically: an existing `path` raises FileExistsError
    before anything is done, a failure leaves no file (a full disk or a refused write: `runtime.atomic.write_error`)."""
    path = Path(path)
    if not parts:
        raise ValueError(f"no video to join into {path.name}")
    refuse_existing(path, "video")
    tmp, files = make_temp_beside(path, ".partial.mp4"), []
    try:
        files = [_temp_text(_ffconcat(parts), ".ffconcat"), _temp_text(_ffmetadata(metadata or {}), ".ffmeta")]
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0",
               "-i", str(files[0]), "-f", "ffmetadata", "-i", str(files[1]), "-map", "0:v", "-map_metadata", "1",
               "-c", "copy", "-movflags", "+faststart+use_metadata_tags", "-f", "mp4", str(tmp)]
        result = subprocess.run(cmd, capture_output=True)
        if result.returncode:
            raise ffmpeg_failure(result.stderr.decode(errors="replace").strip(), "could not join", path, tmp)
        try:
            return publish(tmp, path)
        except OSError as e:
            if (number := write_errno(e)) is None:
                raise
            raise write_error(number, path) from None
    finally:
        tmp.unlink(missing_ok=True)
        for name in files:
            name.unlink(missing_ok=True)


def iter_mp4(path) -> tuple[Iterator[np.ndarray], float]:
    """Frames of a video one at a time (uint8 [H, W, 3]), and its frame rate: for long videos."""
    reader = imageio_ffmpeg.read_frames(str(path), output_params=SWS_EXACT)  # honours the stream's colour tags
    info = next(reader)
    width, height = info["size"]
    return (np.frombuffer(f, dtype=np.uint8).reshape(height, width, 3) for f in reader), float(info["fps"])


def mp4_size(path) -> tuple[int, int]:
    """(width, height) of a video file, from its header (no frame is decoded). FileNotFoundError for a missing file,
    ValueError naming a file ffmpeg cannot read as a video."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no video file {path}")
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        width, height = next(reader)["size"]
    except (OSError, RuntimeError, StopIteration) as e:
        raise ValueError(f"{path} is not a video ffmpeg can read ({' '.join(str(e).split())[:200]})") from None
    finally:
        reader.close()
    return width, height


def read_mp4(path) -> tuple[np.ndarray, float]:
    """Decode a video to uint8 frames [F, H, W, 3] and its frame rate."""
    frames, fps = iter_mp4(path)
    return np.stack(list(frames)), fps


def read_mp4_metadata(path) -> dict[str, str]:
    """The container's metadata tags (e.g. `prompt`, `workflow`) as strings."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    text = subprocess.run(cmd, capture_output=True, check=True).stdout.decode("utf-8")
    out, key = {}, None
    for line in _unescaped_lines(text):
        if line.startswith(";") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key] = value
    return out


def _unescaped_lines(text: str) -> Iterator[str]:
    """Split FFMETADATA text into logical lines, undoing backslash escapes."""
    line, chars = [], iter(text)
    for ch in chars:
        if ch == "\\":
            line.append(next(chars, ""))
        elif ch == "\n":
            yield "".join(line)
            line = []
        else:
            line.append(ch)
    if line:
        yield "".join(line)
