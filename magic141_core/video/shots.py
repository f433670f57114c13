"""The priors of a storyboard's shots: each cut window (a `[cut]` prompt line, `windows.storyboard`) starts from its
own image, the next image of an image batch, or the image a folder's CLIP index finds for the cut's prompt
(`priors.FolderPrior`), fitted to the video size like the start image."""

from __future__ import annotations

import torch

from .start_image import fit_image, rgb
from .windows import CUT, WindowPrompt

SOURCES = "shot images (Long Video's shot_images) or a prior folder (shot_priors; the CLI's --prior-folder)"


def shot_priors(board: list[WindowPrompt], width: int, height: int, images: torch.Tensor | None = None,
                folder=None, first: int = 0, known=(), fit: str = "crop") -> tuple[dict[int, torch.Tensor],
                                                                                   dict[int, str]]:
    """({cut window: its prior [1, height, width, 3] float 0..1}, {cut window: where it came from}) for the cuts of
    `board` from window `first` on, except the `known` windows (a continued video's unchanged cuts). Cut i of the
    whole board (counted from window 0, so a re-roll keeps the images where they were) takes image i of `images`
    [B, H, W, C]; or, with `folder` (a `priors.FolderPrior`), the image nearest its prompt. ValueError naming the
    cuts when there is no source, both are given, or the batch is short."""
    cuts = [k for k, prompt in enumerate(board) if prompt.cut]
    needed = [k for k in cuts if k >= first and k not in known]
    if not needed:
        return {}, {}
    if (images is None) == (folder is None):
        have = "both are given" if images is not None else "none is given"
        raise ValueError(f"the prompt lines starting with {CUT} (windows {', '.join(str(k + 1) for k in needed)}) "
                         f"each start a new shot from a new prior: give one source of those priors, {SOURCES}; {have}")
    shots, sources = {}, {}
    for i, k in enumerate(cuts):
        if k not in needed:
            continue
        if images is not None:
            if i >= len(images):
                raise ValueError(f"cut {i + 1} (window {k + 1}) takes shot image {i + 1}, but the batch holds "
                                 f"{len(images)}: add images, or start fewer lines with {CUT}")
            image, sources[k] = images[i:i + 1], f"shot image {i + 1}"
        else:
            image, found = folder.best(board[k].text)
            sources[k] = f"retrieved {found}"
        shots[k] = fit_image(rgb(image).float(), width, height, fit)
    return shots, sources
