"""Every ComfyUI touch point of the pack in one place: model folders, output paths, progress and previews,
interrupts, and model management. Node modules import ComfyUI only through this module.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch

import comfy
import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import latent_preview

from ..magic141_core.interrupt import set_interrupt_check

CATEGORY = "Magic141"

try:  # ComfyUI's native VIDEO type (0.3.3x and later; 0.3.75 and 0.30.0 both have it here)
    from comfy_api.input_impl import VideoFromFile
except ImportError:  # an older host: the nodes simply have no VIDEO output
    VideoFromFile = None

VIDEO_OUTPUT = ("VIDEO",) if VideoFromFile is not None else ()
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


def compute_device():
    return mm.get_torch_device()


def text_encoder_device():
    return mm.text_encoder_device()


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


def managed(module, size: int | None = None, text_encoder: bool = False) -> comfy.model_patcher.ModelPatcher:
    """Hand a model to ComfyUI's memory management: it loads to the compute device on use and offloads on demand.

    The patcher is the kind native loaders use: `CoreModelPatcher` where the host has it (ComfyUI swaps in its
    Dynamic VRAM patcher there on NVIDIA), else `ModelPatcher`. Text encoders take ComfyUI's text-encoder devices
    (which --lowvram and friends may point at the CPU), everything else the diffusion model's."""
    size = size or sum(p.numel() * p.element_size() for p in module.parameters())
    if text_encoder:
        load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    else:
        load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)  # read at call time
    return patcher(module, load_device=load_device, offload_device=offload_device, size=size)


def load(patcher: comfy.model_patcher.ModelPatcher):
    """Make room (offloading other models if needed) and move the whole model to the compute device."""
    mm.load_models_gpu([patcher], force_full_load=True)
    return patcher.model


class _Holder(torch.nn.Module):
    """A plain module around a transformers model: patchers set attributes (`device`, ...) that transformers' models
    keep read-only."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


class ManagedPlacement:
    """The `place(models)` hook of models the core loads lazily (Magic141's encoders, the retrieval CLIP): each model
    gets one patcher, ComfyUI moves them to the compute device before use (offloading others to make room), they are
    then listed among ComfyUI's loaded models, and "Unload models" / `free_memory` offloads them like native ones."""

    def __init__(self, text_encoder: bool = True):
        self.text_encoder = text_encoder
        self.patchers: list[comfy.model_patcher.ModelPatcher] = []

    def __call__(self, models) -> None:
        if [p.model.inner for p in self.patchers] != list(models):  # first use, or the models were reloaded
            self.patchers = [managed(_Holder(m), text_encoder=self.text_encoder) for m in models]
        mm.load_models_gpu(self.patchers, force_full_load=True)


def check_interrupt():
    mm.throw_exception_if_processing_interrupted()


# The core checks this between checkpoint layers while loading, transformer blocks, CPU attention chunks, VAE blocks
# and VAE tiles: ComfyUI's Cancel stops within seconds (magic141_core/interrupt.py).
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


def show_text(node_id, text: str) -> None:
    """Log `text` and show it on the node `node_id` (the frontend's progress text under the node's title)."""
    logging.info("%s", text)
    server = sys.modules.get("server")  # ComfyUI's, once main.py runs it (not imported by nodes run in-process)
    if node_id is not None and getattr(getattr(server, "PromptServer", None), "instance", None) is not None:
        server.PromptServer.instance.send_progress_text(text, str(node_id))


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
    """Next free `<prefix>_00001_.<ext>` in ComfyUI's output folder, and its UI record (filename, subfolder, type).

    The folder is checked after resolving symlinks (ComfyUI's own check compares unresolved paths): a prefix whose
    folder is, or passes through, a link to somewhere outside the output folder is refused with ValueError."""
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


def metadata_enabled() -> bool:
    from comfy.cli_args import args

    return not args.disable_metadata


class NativeFrameVAE:
    """ComfyUI's native VAE as the long-video runner's `FrameVAE`: encode one frame, decode one window.

    Each window is decoded in one temporal piece (spatially tiled, `tile` px with `overlap`): a window split in time
    by the native tiled decode differs from the one-pass decode after the split (a visible jump mid-window), while
    one temporal piece equals it. Memory: one spatial tile of the whole window at a time.
    The native encode returns the posterior mean (the official code samples; for HunyuanVideo's VAE the posterior
    std is tiny), so the seed is unused here."""

    def __init__(self, vae, tile: int = 256, overlap: int = 64):
        self.vae, self.tile, self.overlap = vae, tile, overlap

    @property
    def compute_dtype(self):
        """The dtype ComfyUI runs the VAE in (named in a non-finite-output error)."""
        return getattr(self.vae, "vae_dtype", "ComfyUI's VAE dtype")

    def encode_frame(self, image, seed):
        return self.vae.encode(image[..., :3])[:, :, :1]

    def decode_frames(self, latent):
        spatial = self.vae.spacial_compression_decode()
        frames = self.vae.decode_tiled(latent, tile_x=self.tile // spatial, tile_y=self.tile // spatial,
                                       overlap=self.overlap // spatial, tile_t=max(2, latent.shape[2]), overlap_t=1)
        yield frames.reshape(-1, *frames.shape[-3:])  # [F, H, W, 3]


# ------------------------------------------------------------------------------------------- native MODEL interop
# Design (docs/design.md, "Native MODEL and CONDITIONING"): our DiT sits behind ComfyUI's own HunyuanVideo model
# class, so native KSampler, LoRA loaders, ModelSamplingSD3 and ModelSave see a HunyuanVideo-I2V MODEL while every
# forward still runs the one core DiT (with its int8 layers and block swap). A native HunyuanVideo-I2V MODEL (ComfyUI's
# own DiT, e.g. from Load Diffusion Model) drives our sampler through `NativeHunyuanDiT`.
import comfy.model_base  # noqa: E402
import comfy.supported_models  # noqa: E402
import torch  # noqa: E402

from ..magic141_core.dit.model import image_to_video_input  # noqa: E402

MAGIC141_SHIFT = 5.0  # the official sampler's shift: native "simple" sigmas at 4 steps = ours


class _CoreDiTModel:
    """What our DiT needs from ComfyUI's model class: the forward call with our argument names."""

    def get_dtype(self):
        return self.diffusion_model.img_in.proj.weight.dtype

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat.to(xc)], dim=1)
        timestep = self.model_sampling.timestep(t).float()
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(c_crossattn.shape[:2], dtype=torch.long, device=c_crossattn.device)
        dit = self.diffusion_model
        guidance = kwargs.get("guidance") if dit.guidance_embedder is not None else None
        if guidance is not None:
            guidance = guidance.float().reshape(-1).expand(x.shape[0]) if guidance.numel() == 1 else guidance
        v = dit(xc, timestep, c_crossattn, mask.to(xc.device), kwargs["y"], guidance=guidance)
        return self.model_sampling.calculate_denoised(sigma, v.float(), x)


class Magic141I2VModel(_CoreDiTModel, comfy.model_base.HunyuanVideoI2V):
    """Our image-to-video DiT as ComfyUI's HunyuanVideoI2V (concat of [reference ; first-frame mask])."""


class Magic141T2VModel(_CoreDiTModel, comfy.model_base.HunyuanVideo):
    """Our DiT loaded from a 16-channel (text-to-video) HunyuanVideo checkpoint."""


def native_model(dit) -> comfy.model_base.BaseModel:
    """Put a core `Magic141DiT` behind ComfyUI's HunyuanVideo model class (it becomes `diffusion_model`, so the
    state-dict keys LoRA loaders see are `diffusion_model.<official key>`). Sampling shift 5 (Magic141's)."""
    i2v = dit.config.is_i2v
    config_class = comfy.supported_models.HunyuanVideoI2V if i2v else comfy.supported_models.HunyuanVideo
    unet_config = {"image_model": "hunyuan_video", "in_channels": dit.config.in_channels,
                   "disable_unet_model_creation": True}
    config = config_class(unet_config)
    config.sampling_settings["shift"] = MAGIC141_SHIFT
    model = (Magic141I2VModel if i2v else Magic141T2VModel)(config, device=dit.img_in.proj.weight.device)
    model.diffusion_model = dit
    return model


def core_dit(patcher):
    """The core DiT inside a MODEL from Magic141 Model Loader, or None for any other MODEL."""
    model = getattr(patcher, "model", None)
    return model.diffusion_model if isinstance(model, _CoreDiTModel) else None


def describe_model(patcher) -> str:
    """What a MODEL is, for messages: its ComfyUI class and input channels."""
    model = getattr(patcher, "model", None)
    if model is None:
        return f"a {type(patcher).__name__} (not a ComfyUI MODEL)"
    channels = getattr(getattr(model, "diffusion_model", None), "in_channels", None)
    return f"a {type(model).__name__} model" + (f" with {channels} input channels" if channels else "")


class NativeHunyuanDiT:
    """A native HunyuanVideo-I2V "concat" MODEL (ComfyUI's own DiT) as the core sampler's velocity model: the same
    call as `Magic141DiT` (x, t, text, mask, pooled, reference, guidance).

    ComfyUI's token refiner averages over every text token it is given, padding included, so each group of samples
    with the same number of valid tokens runs with its padding cropped (exact; one forward when lengths agree)."""

    def __init__(self, patcher):
        self.base = patcher.model
        self.dit = self.base.diffusion_model
        self.guidance_embedder = getattr(self.dit, "guidance_in", None)
        self.text_dim, self.pooled_dim = self.dit.params.context_in_dim, self.dit.params.vec_in_dim
        self.options = patcher.model_options.get("transformer_options", {})

    def parameters(self):
        return self.dit.parameters()

    def __call__(self, x, t, txt, txt_mask, pooled, reference=None, guidance=None):
        xc = image_to_video_input(x, reference)
        dtype = self.base.manual_cast_dtype or self.base.get_dtype()
        lengths = txt_mask.sum(dim=1)
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().flatten()
            if not bool(txt_mask[rows, :n].all()):
                raise ValueError("the text mask must be right-padded (ones, then zeros)")
            g = None if guidance is None or self.guidance_embedder is None else guidance[rows].to(dtype)
            v = self.dit(xc[rows].to(dtype), t[rows].float(), txt[rows, :n].to(dtype), y=pooled[rows].to(dtype),
                         guidance=g, attention_mask=None, transformer_options=self.options)
            out[rows] = v.float()
        return out


def velocity_model(patcher, node: str):
    """Load a MODEL for our sampler and return what `pipeline.sample_latent` drives: our core DiT (Magic141 Model
    Loader) or a `NativeHunyuanDiT` (a native HunyuanVideo-I2V v1 concat model). Any other model family gets a
    ValueError naming what it is and what is needed."""
    dit = core_dit(patcher)
    model = getattr(patcher, "model", None)
    if dit is None:
        in_channels = getattr(getattr(model, "diffusion_model", None), "in_channels", None)
        native_i2v = (isinstance(model, comfy.model_base.HunyuanVideoI2V) and in_channels == 33
                      and model.latent_format.latent_channels == 16)
        if not native_i2v:
            kind = ("a HunyuanVideo text-to-video model (16 input channels)" if isinstance(
                model, comfy.model_base.HunyuanVideo) and in_channels == 16 else describe_model(patcher))
            raise ValueError(
                f"{node} got {kind}; it needs an image-to-video transformer with 33 input channels: Magic141 Model "
                "Loader, or a HunyuanVideo-I2V v1 (concat) checkpoint through Load Diffusion Model")
    load(patcher)
    return dit if dit is not None else NativeHunyuanDiT(patcher)
