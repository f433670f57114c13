"""Every ComfyUI touch point of the pack in one place: model folders, output paths, progress and previews,
interrupts, and model management. Node modules import ComfyUI only through this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import comfy
import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import latent_preview

from ..magic141_core.interrupt import set_interrupt_check

CATEGORY = "Magic141"
LATENT_FORMAT = comfy.latent_formats.HunyuanVideo()  # scale 0.476986 and the latent -> RGB preview factors


def filenames(folder: str) -> list[str]:
    return folder_paths.get_filename_list(folder)


def model_folders(folder: str) -> list[str]:
    """Sub-folders of a model folder that hold a Hugging Face model (a config.json), listed with a trailing '/'."""
    found = set()
    for root in folder_paths.get_folder_paths(folder):
        if os.path.isdir(root):
            found.update(f"{d}/" for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    return sorted(found)


def model_folder(folder: str) -> Path:
    """The first (default) folder ComfyUI uses for `folder` models: where the pack saves model files."""
    return Path(folder_paths.get_folder_paths(folder)[0])


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


def compute_device():
    return mm.get_torch_device()


def make_room(num_bytes: int):
    """Ask ComfyUI to offload other models until `num_bytes` are free on the compute device (no-op on CPU)."""
    device = mm.get_torch_device()
    if device.type != "cpu":
        mm.free_memory(num_bytes, device)


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


def intermediate_device():
    return mm.intermediate_device()


def managed(module, size: int | None = None) -> comfy.model_patcher.ModelPatcher:
    """Hand a model to ComfyUI's memory management: it loads to the compute device on use and offloads on demand."""
    size = size or sum(p.numel() * p.element_size() for p in module.parameters())
    return comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device(), size=size)


def load(patcher: comfy.model_patcher.ModelPatcher):
    """Make room (offloading other models if needed) and move the whole model to the compute device."""
    mm.load_models_gpu([patcher], force_full_load=True)
    return patcher.model


def check_interrupt():
    mm.throw_exception_if_processing_interrupted()


# The core checks this between transformer blocks, CPU attention chunks, VAE blocks and VAE tiles: ComfyUI's Cancel
# stops a step within seconds (magic141_core/interrupt.py).
set_interrupt_check(check_interrupt)


def step_callback(total: int, preview: bool = True):
    """A sampler callback: advances ComfyUI's progress bar per step with a latent preview, honours interrupts."""
    bar = comfy.utils.ProgressBar(total)
    previewer = latent_preview.get_previewer(mm.get_torch_device(), LATENT_FORMAT) if preview else None

    def callback(step):
        check_interrupt()
        image = previewer.decode_latent_to_preview_image("JPEG", step.denoised) if previewer else None
        bar.update_absolute(step.index + 1, step.total, image)

    return callback


def progress_callback():
    """A `progress(done, total)` callback (indexing batches, VAE chunks) that drives a progress bar and honours
    interrupts; the bar is created on the first call, when the total is known."""
    bar = None

    def callback(done: int, total: int):
        nonlocal bar
        check_interrupt()
        bar = bar or comfy.utils.ProgressBar(total)
        bar.update_absolute(done, total)

    return callback


def output_file(filename_prefix: str, extension: str, width: int = 0, height: int = 0) -> tuple[Path, dict]:
    """Next free `<prefix>_00001_.<ext>` in ComfyUI's output folder, and its UI record (filename, subfolder, type)."""
    out_dir = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir, width, height)
    while True:
        filename = f"{name}_{counter:05}_.{extension}"
        path = Path(folder) / filename
        if not path.exists():
            break
        counter += 1
    os.makedirs(folder, exist_ok=True)
    return path, {"filename": filename, "subfolder": subfolder, "type": "output"}


def metadata_enabled() -> bool:
    from comfy.cli_args import args

    return not args.disable_metadata


class NativeFrameVAE:
    """ComfyUI's native VAE as the long-video runner's `FrameVAE`: encode one frame, decode one window tiled.

    The native encode returns the posterior mean (the official code samples; for HunyuanVideo's VAE the posterior
    std is tiny), so the seed is unused here."""

    def __init__(self, vae, tile: int = 256, overlap: int = 64, temporal: int = 64, temporal_overlap: int = 8):
        self.vae, self.tiles = vae, (tile, overlap, temporal, temporal_overlap)

    def encode_frame(self, image, seed):
        return self.vae.encode(image[..., :3])[:, :, :1]

    def decode_frames(self, latent):
        tile, overlap, temporal, temporal_overlap = self.tiles
        spatial, t_comp = self.vae.spacial_compression_decode(), self.vae.temporal_compression_decode() or 1
        frames = self.vae.decode_tiled(latent, tile_x=tile // spatial, tile_y=tile // spatial,
                                       overlap=overlap // spatial, tile_t=max(2, temporal // t_comp),
                                       overlap_t=max(1, temporal_overlap // t_comp))
        yield frames.reshape(-1, *frames.shape[-3:])  # [F, H, W, 3]
