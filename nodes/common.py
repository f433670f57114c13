"""Input groups shared by several nodes (one definition, many nodes): video size and sampling settings."""

from __future__ import annotations

from ..magic141_core.image import FITS, fit_image, nearest_bucket, rgb

RESOLUTIONS = ["540p", "720p", "custom"]

VIDEO_SIZE = {
    "resolution": (RESOLUTIONS, {"default": "540p", "tooltip": "540p/720p: the official bucket nearest the image's "
                                 "aspect ratio (resize + centre crop). custom: width and height below."}),
    "width": ("INT", {"default": 960, "min": 16, "max": 4096, "step": 16,
                      "tooltip": "Video width (custom only); a multiple of 16."}),
    "height": ("INT", {"default": 544, "min": 16, "max": 4096, "step": 16,
                       "tooltip": "Video height (custom only); a multiple of 16."}),
}

FIT = {"fit": (list(FITS), {"default": "crop", "tooltip": "How the start image meets the video's aspect ratio. "
                            "crop: fill the frame, cut the edges (the official way). pad: keep the whole image, add "
                            "black bars (nothing is cut off; the bars stay in the video, no mask marks them)."})}

SAMPLING = {
    "steps": ("INT", {"default": 4, "min": 1, "max": 100, "tooltip": "Euler steps. 4 matches the DMD2 distillation."}),
    "shift": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 100.0, "step": 0.01,
                        "tooltip": "Flow-matching timestep shift. The official sampler uses 5."}),
    "guidance": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1,
                           "tooltip": "1.0 is the distilled default (one forward per step). Above 1 on a model "
                                      "without a guidance embedder, classifier-free guidance runs with the negative "
                                      "prompt (twice the compute)."}),
    "seed": ("INT", {"default": 39, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                     "tooltip": "Noise seed; the noise is drawn on the CPU so a seed gives the same video on any "
                                "device."}),
}


def fit_start_image(image, resolution: str, width: int, height: int, fit: str = "crop"):
    """The start image as RGB at the video size: `resolution`'s bucket (or width x height for custom), cropped or
    padded (`fit`, see magic141_core.image.fit_image)."""
    image = rgb(image)
    if resolution != "custom":
        width, height = nearest_bucket(image.shape[2], image.shape[1], resolution)
    return fit_image(image, width, height, fit)
