"""ComfyUI's folders as the pack sees them: model files and Hugging Face folders in `models/`, prior image folders,
and new files in `output/` (never outside it), with the native VIDEO value of a written video."""

from __future__ import annotations

import os
from pathlib import Path

import comfy
import folder_paths

try:  # ComfyUI's native VIDEO type (0.3.3x and later; 0.3.75 and 0.30.0 both have it here)
    from comfy_api.input_impl import VideoFromFile
except ImportError:  # an older host: the nodes simply have no VIDEO output
    VideoFromFile = None


VIDEO_OUTPUT = ("VIDEO",) if VideoFromFile is not None else ()


def filenames(folder: str) -> list[str]:
    return folder_paths.get_filename_list(folder)


def model_folders(folder: str) -> list[str]:
    """Sub-folders of a model folder that hold a Hugging Face model (a config.json), listed with a trailing '/'."""
    found = set()
    for root in folder_paths.get_folder_paths(folder):
        if os.path.isdir(root):
            found.update(f"{d}/" for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    return sorted(found)


def new_model_file(folder: str, filename: str) -> Path:
    """Where the pack saves a new model file: `models/<folder>/<filename>` of ComfyUI's layout (in stock ComfyUI
    `diffusion_models` lists `models/unet` first, so the first folder is not it), else the first folder listed.

    Raises FileExistsError naming the file when `filename` exists in ANY of `folder`'s folders: the save would
    replace a model, or be shadowed by one that loaders find first."""
    existing = folder_paths.get_full_path(folder, filename)
    if existing is not None:
        raise FileExistsError(f"a model named {filename!r} already exists ({existing}); nothing was written. Choose "
                              "another filename (saving never replaces or shadows a model)")
    roots = [Path(p) for p in folder_paths.get_folder_paths(folder)]
    root = next((r for r in roots if r.name == folder), roots[0])
    path = root / filename
    if os.path.lexists(path):  # a dangling link or a folder, which the lookup above does not report
        raise FileExistsError(f"{path} already exists; nothing was written. Choose another filename")
    return path


def model_entry(folder: str, name: str) -> Path:
    """A file, or a Hugging Face sub-folder ('name/'), chosen from one of ComfyUI's model folders."""
    if not name.endswith("/"):
        return model_file(folder, name)
    for root in folder_paths.get_folder_paths(folder):
        path = Path(root) / name.rstrip("/")
        if (path / "config.json").is_file() and path.resolve().parent == Path(root).resolve():
            return path
    raise FileNotFoundError(f"model folder {name!r} not found in models/{folder}")


def comfy_tokenizer(name: str) -> Path:
    """A tokenizer folder shipped inside ComfyUI (comfy/text_encoders/llama_tokenizer, comfy/sd1_tokenizer)."""
    base = Path(list(comfy.__path__)[0])  # a namespace package: no __file__
    return base / "text_encoders" / name if (base / "text_encoders" / name).is_dir() else base / name


def model_file(folder: str, name: str) -> Path:
    """Full path of a file chosen from one of ComfyUI's model folders (never outside them)."""
    return Path(folder_paths.get_full_path_or_raise(folder, name))


def image_folders() -> dict[str, tuple[Path, str]]:
    """Image folders a workflow may name: sub-folders of input/ ("input/<name>") and of any folder the user
    registered as `magic141_priors` in extra_model_paths.yaml ("priors/<name>"). -> {entry: (root, relative)}."""
    roots = [("input", Path(folder_paths.get_input_directory()))]
    if "magic141_priors" in folder_paths.folder_names_and_paths:
        roots += [("priors", Path(p)) for p in folder_paths.get_folder_paths("magic141_priors")]
    entries = {}
    for label, root in roots:
        if root.is_dir():
            for sub in sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
                entries.setdefault(f"{label}/{sub}", (root, sub))
    return entries


def temp_dir() -> Path:
    return Path(folder_paths.get_temp_directory())


def output_file(filename_prefix: str, extension: str, width: int = 0, height: int = 0) -> tuple[Path, dict]:
    """Next free `<prefix>_00001_.<ext>` in ComfyUI's output folder, and its UI record (filename, subfolder, type).

    The folder is checked after resolving symlinks (ComfyUI's own check compares unresolved paths): a prefix whose
    folder is, or passes through, a link to somewhere outside the output folder is refused with ValueError, and so
    is a prefix that names no visible file (`check_prefix`)."""
    check_prefix(filename_prefix)
    out_dir = folder_paths.get_output_directory()
    # checked before ComfyUI's own check (0.30 has one, with a less specific message; 0.3.x compares unresolved paths)
    _inside_output(Path(out_dir), Path(out_dir) / Path(filename_prefix).parent, f"filename_prefix {filename_prefix!r}")
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir, width, height)
    _inside_output(Path(out_dir), Path(folder), f"filename_prefix {filename_prefix!r}")
    while True:
        filename = f"{name}_{counter:05}_.{extension}"
        path = Path(folder) / filename
        if not os.path.lexists(path):
            break
        counter += 1
    os.makedirs(folder, exist_ok=True)
    _inside_output(Path(out_dir), path.parent, f"filename_prefix {filename_prefix!r}")  # now made: check again
    return path, {"filename": filename, "subfolder": subfolder, "type": "output"}


def output_dir() -> Path:
    return Path(folder_paths.get_output_directory())


def output_entry(relative: str, what: str) -> Path:
    """A file or folder named by its path inside the output folder (as the nodes' filename and sidecar outputs give
    it): ValueError naming `what` for an absolute path, '..', or a path (a link) that resolves outside the output
    folder; nothing outside it is ever opened."""
    text = str(relative).strip().replace("\\", "/")
    if not text or Path(text).is_absolute() or ".." in Path(text).parts:
        raise ValueError(f"{what} {relative!r} must be a path inside the output folder, as Long Video's sidecar or "
                         "filename output gives it (e.g. Magic141/long_00001_.m141)")
    path = output_dir() / text
    _inside_output(output_dir(), path, f"{what} {relative!r}")
    return path


def output_relative(path: Path) -> str:
    """`path` (inside the output folder) as the nodes name it: relative, with forward slashes."""
    return Path(path).resolve().relative_to(output_dir().resolve()).as_posix()


PREFIX_RULE = ("a file name, optionally after sub-folders of the output folder (e.g. 'Magic141/clip'): not empty, "
               "not starting with '.', without control characters")


def check_prefix(prefix) -> None:
    """ValueError stating `PREFIX_RULE` for a filename_prefix that is empty, ends in a folder, names a hidden file
    ('.x', which would also hide it from the UI) or holds a NUL or another control character."""
    name = str(prefix).replace("\\", "/").rpartition("/")[2].strip()
    problem = ("holds a control character" if any(ord(c) < 32 or ord(c) == 127 for c in str(prefix)) else
               "names no file" if not name else "names a hidden file" if name.startswith(".") else None)
    if problem:
        raise ValueError(f"filename_prefix {str(prefix)!r} {problem}; it must be {PREFIX_RULE}")


def _inside_output(root: Path, path: Path, what: str) -> Path:
    """`path` resolved (symlinks followed, as far as it exists); ValueError naming `what` if it leaves `root`."""
    resolved, root = path.resolve(), root.resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"{what} points outside the output folder ({path} resolves to {resolved}, a symlink "
                         f"leading out of {root}?); refused. Use a prefix inside the output folder")
    return resolved


def video_output(path: Path) -> tuple:
    """The native VIDEO value of a written video file (a 1-tuple to append to a node's results), or () on a host
    without the VIDEO type. It reads the file lazily, as Load Video's output does, so native Save Video, Get Video
    Components and video-combining nodes take it as they take a loaded video."""
    return (VideoFromFile(str(path)),) if VideoFromFile is not None else ()


def video_frames(video, what: str):
    """The frames of a native VIDEO (Load Video, a node's VIDEO output) as IMAGE [F, H, W, 3] float 0..1, decoded by
    ComfyUI itself (`get_components`, as Get Video Components does). ValueError naming `what` when it is not a VIDEO
    or holds no frame (nothing is rendered or written then)."""
    if not hasattr(video, "get_components"):
        raise ValueError(f"{what} must be a VIDEO (e.g. from Load Video), got {type(video).__name__}")
    images = video.get_components().images
    if images.ndim != 4 or not len(images):
        raise ValueError(f"{what} has no frames (an empty video); connect a video with at least one frame")
    return images


def iter_video_frames(video, what: str):
    """The frames of a native VIDEO one at a time ([H, W, 3]): streamed from its file when it is an untrimmed
    VideoFromFile on disk (a long clip is never held whole), else from ComfyUI's own decode (`video_frames`)."""
    from ...magic141_core.video.mp4 import iter_mp4

    source = video.get_stream_source() if hasattr(video, "get_stream_source") else None
    trim = video.get_active_trim_window() if hasattr(video, "get_active_trim_window") else (0.0, 0.0)
    if isinstance(source, str) and os.path.isfile(source) and tuple(trim) == (0.0, 0.0):
        return iter_mp4(source)[0]
    return iter(video_frames(video, what))


def metadata_enabled() -> bool:
    from comfy.cli_args import args

    return not args.disable_metadata
