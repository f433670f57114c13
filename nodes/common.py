"""Input groups shared by several nodes (one definition, many nodes): video size and sampling settings."""

from __future__ import annotations

from ..magic141_core.image import FITS, fit_image, nearest_bucket, rgb
from ..magic141_core.pipeline import MAX_SIDE
from ..magic141_core.sampling import SEED_RANGE, SHIFT_RANGE, STEPS_RANGE

RESOLUTIONS = ["540p", "720p", "custom"]

VIDEO_SIZE = {
    "resolution": (RESOLUTIONS, {"default": "540p", "tooltip": "540p/720p: the official bucket nearest the image's "
                                 "aspect ratio (resize + centre crop). custom: width and height below."}),
    "width": ("INT", {"default": 960, "min": 16, "max": MAX_SIDE, "step": 16,
                      "tooltip": "Video width (custom only); a multiple of 16."}),
    "height": ("INT", {"default": 544, "min": 16, "max": MAX_SIDE, "step": 16,
                       "tooltip": "Video height (custom only); a multiple of 16."}),
}

FIT = {"fit": (list(FITS), {"default": "crop", "tooltip": "How the start image meets the video's aspect ratio. "
                            "crop: fill the frame, cut the edges (the official way). pad: keep the whole image, add "
                            "black bars (nothing is cut off; the bars stay in the video, no mask marks them)."})}

SAMPLING = {
    "steps": ("INT", {"default": 4, "min": STEPS_RANGE[0], "max": STEPS_RANGE[1],
                      "tooltip": "Euler steps. 4 matches the DMD2 distillation."}),
    "shift": ("FLOAT", {"default": 5.0, "min": SHIFT_RANGE[0], "max": SHIFT_RANGE[1], "step": 0.01,
                        "tooltip": "Flow-matching timestep shift. The official sampler uses 5."}),
    "guidance": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1,
                           "tooltip": "1.0 is the distilled default (one forward per step). Above 1 on a model "
                                      "without a guidance embedder, classifier-free guidance runs with the negative "
                                      "prompt (twice the compute)."}),
    "seed": ("INT", {"default": 39, "min": SEED_RANGE[0], "max": SEED_RANGE[1], "control_after_generate": True,
                     "tooltip": "Noise seed; the noise is drawn on the CPU so a seed gives the same video on any "
                                "device."}),
}


def fit_start_image(image, resolution: str, width: int, height: int, fit: str = "crop",
                    name: str = "start_image"):
    """The start image as RGB at the video size: `resolution`'s bucket (or width x height for custom), cropped or
    padded (`fit`, see magic141_core.image.fit_image).

    A batch of several images is refused (ValueError naming the input `name`): Magic141 is conditioned on one
    start frame, and native HunyuanImageToVideo's meaning (the extra images become the first frames) is not what
    this model was trained on; several clips joined silently into one file was wrong either way."""
    if image.ndim == 4 and image.shape[0] > 1:
        raise ValueError(f"{name} is a batch of {image.shape[0]} images; a Magic141 clip starts from one image. "
                         "Pick one with the native 'Image From Batch' node (batch_index, length 1), or queue the "
                         "workflow once per image")
    image = rgb(image)
    if resolution != "custom":
        width, height = nearest_bucket(image.shape[2], image.shape[1], resolution)
    return fit_image(image, width, height, fit)


def output_linked(prompt, unique_id, index: int) -> bool:
    """Whether output `index` of node `unique_id` feeds any node of the API `prompt` (ComfyUI's hidden PROMPT and
    UNIQUE_ID inputs; links are [source id, output index]). True when either is unknown (a direct call)."""
    if prompt is None or unique_id is None:
        return True
    return any(isinstance(value, list) and len(value) == 2 and str(value[0]) == str(unique_id) and value[1] == index
               for node in prompt.values() for value in node.get("inputs", {}).values())
