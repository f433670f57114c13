"""Input groups shared by several nodes (one definition, many nodes): video size and sampling settings."""

from __future__ import annotations

from ..magic141_core.sampling.noise import SEED_RANGE
from ..magic141_core.sampling.sampler import MAX_SIDE
from ..magic141_core.sampling.schedule import SHIFT_RANGE, STEPS_RANGE
from ..magic141_core.video.start_image import (
    AUTO,
    DRAFT_DIVISOR,
    DRAFT_FRAMES,
    DRAFT_WINDOW_FRAMES,
    DRAFT_WINDOWS,
    FITS,
    VideoSize,
    draft_bucket,
    fit_image,
    rgb,
    size_choices,
    video_size,
)
from . import inputs
from .host import memory
from .host.schema import advanced, io

CATEGORY = "Magic141"

RESOLUTION_TOOLTIP = (
    "auto: 540p on a GPU, draft on a CPU (the size chosen is shown on the node and logged). draft: the 540p bucket at "
    "1/{divisor} of each side (16:9 -> {wide}, 1:1 -> {square}), {frames}: a quick look that a 2-core CPU finishes "
    "in a minute or two. 540p/720p: the official bucket nearest the image's aspect ratio (resize + "
    "centre crop). custom: width and height below.")


def video_size_inputs(long_video: bool = False) -> list:
    """The resolution / width / height inputs (Long Video's draft entry also caps the windows)."""
    tooltip = RESOLUTION_TOOLTIP.format(
        divisor=DRAFT_DIVISOR, wide="x".join(map(str, draft_bucket(16, 9))),
        square="x".join(map(str, draft_bucket(1, 1))),
        frames=f"at most {DRAFT_WINDOWS} windows of at most {DRAFT_WINDOW_FRAMES} frames" if long_video
        else f"at most {DRAFT_FRAMES} frames")
    return [
        io.Combo.Input("resolution", options=size_choices(long_video), default=AUTO, tooltip=tooltip),
        io.Int.Input("width", default=960, min=16, max=MAX_SIDE, step=16,
                     tooltip="Video width (custom only); a multiple of 16."),
        io.Int.Input("height", default=544, min=16, max=MAX_SIDE, step=16,
                     tooltip="Video height (custom only); a multiple of 16."),
    ]


# Input groups shared by several nodes, in the V3 schema (a node's `inputs` list splices them in, in this order)
VIDEO_SIZE_INPUTS, LONG_VIDEO_SIZE_INPUTS = video_size_inputs(), video_size_inputs(long_video=True)

FIT_INPUTS = [io.Combo.Input(
    "fit", options=list(FITS), default="crop", optional=True,  # optional: older workflows load unchanged (crop)
    tooltip="How the start image meets the video's aspect ratio. crop: fill the frame, cut the edges (the official "
            "way). pad: keep the whole image, add black bars (nothing is cut off; the bars stay in the video, no "
            "mask marks them).")]

SAMPLING_INPUTS = [
    io.Int.Input("steps", default=4, min=STEPS_RANGE[0], max=STEPS_RANGE[1],
                 tooltip="Euler steps. 4 matches the DMD2 distillation."),
    io.Float.Input("shift", default=5.0, min=SHIFT_RANGE[0], max=SHIFT_RANGE[1], step=0.01,
                   tooltip="Flow-matching timestep shift. The official sampler uses 5."),
    io.Float.Input("guidance", default=1.0, min=0.0, max=30.0, step=0.1,
                   tooltip="1.0 is the distilled default (one forward per step). Above 1 on a model without a "
                           "guidance embedder, classifier-free guidance runs with the negative prompt (twice the "
                           "compute)."),
    io.Int.Input("seed", default=39, min=SEED_RANGE[0], max=SEED_RANGE[1], control_after_generate=True,
                 tooltip="Noise seed; the noise is drawn on the CPU so a seed gives the same video on any device."),
]

CFG_INPUTS = [advanced(io.Float.Input(
    "cfg", default=1.0, min=0.0, max=30.0, step=0.1, optional=True,
    tooltip="Classifier-free guidance on top of an embedded guidance, with the negative prompt (twice the "
            "compute). 1: none. SkyReels-V1 samples at 6 with guidance 1."))]


def fit_start_image(image, resolution: str, width: int, height: int, frames: int, fit: str = "crop",
                    name: str = "start_image", long_video: bool = False, node: str = "Magic141 Image To Video") -> tuple:
    """(the start image as RGB at the video size, the VideoSize): the size by the core's `video.start_image.video_size`
    (`resolution`'s entry on ComfyUI's compute device, `frames` asked; width x height for custom), the image cropped
    or padded to it (`fit`, see magic141_core.video.start_image.fit_image).

    A batch of several images is refused (ValueError naming the input `name`): Magic141 is conditioned on one
    start frame, and native HunyuanImageToVideo's meaning (the extra images become the first frames) is not what
    this model was trained on; several clips joined silently into one file was wrong either way."""
    inputs.image_batch(image, node, name)
    if image.shape[0] > 1:
        raise ValueError(f"{name} is a batch of {image.shape[0]} images; a Magic141 clip starts from one image. "
                         "Pick one with the native 'Image From Batch' node (batch_index, length 1), or queue the "
                         "workflow once per image")
    image = rgb(image)
    size: VideoSize = video_size(resolution, image.shape[2], image.shape[1], frames, memory.compute_device(),
                                 custom=(width, height), long_video=long_video)
    return fit_image(image, size.width, size.height, fit), size


def output_linked(prompt, unique_id, index: int) -> bool:
    """Whether output `index` of node `unique_id` feeds any node of the API `prompt` (ComfyUI's hidden PROMPT and
    UNIQUE_ID inputs; links are [source id, output index]). True when either is unknown (a direct call)."""
    if prompt is None or unique_id is None:
        return True
    return any(isinstance(value, list) and len(value) == 2 and str(value[0]) == str(unique_id) and value[1] == index
               for node in prompt.values() for value in node.get("inputs", {}).values())
