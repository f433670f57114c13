"""Progress, previews and Cancel: ComfyUI's progress bar and latent previews for the core's callbacks, text shown on a
node, and ComfyUI's interrupt installed as the core's interrupt check."""

from __future__ import annotations

import logging
import sys

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import latent_preview

from ...magic141_core.runtime.interrupt import set_interrupt_check

LATENT_FORMAT = comfy.latent_formats.HunyuanVideo()  # scale 0.476986 and the latent -> RGB preview factors


def check_interrupt():
    mm.throw_exception_if_processing_interrupted()


# The core checks this between checkpoint layers while loading, transformer blocks, CPU attention chunks, VAE blocks
# and VAE tiles: ComfyUI's Cancel stops within seconds (magic141_core/runtime/interrupt.py).
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
