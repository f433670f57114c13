"""Image priors: the retrieval prior (the image nearest the prompt by CLIP) and a switch between priors."""

from __future__ import annotations

from ..magic141_core.priors import ClipEmbedder, FolderPrior, ImageIndex, file_inside, folder_fingerprint, \
    resolve_inside
from ..magic141_core.video.image_files import load_image
from .common import CATEGORY
from .host import memory, paths, progress

_EMBEDDERS: dict[str, tuple[ClipEmbedder, memory.ManagedPlacement]] = {}  # one CLIP per model folder, reused


def _embedder(folder: str) -> ClipEmbedder:
    """The retrieval CLIP of `folder`, on the compute device under ComfyUI's model management."""
    path = paths.model_entry("clip_vision", folder)
    key = f"{path}:{path.stat().st_mtime_ns}"
    if key not in _EMBEDDERS:
        _EMBEDDERS.clear()
        _EMBEDDERS[key] = ClipEmbedder(path), memory.ManagedPlacement()
    embedder, place = _EMBEDDERS[key]
    place([embedder.model])
    return embedder


class Magic141RetrievePrior:
    DESCRIPTION = (
        "Picks the start image by retrieval: the image in a folder whose CLIP embedding is nearest the prompt (the "
        "Magic141 paper's retrieval prior). The folder is indexed once and re-indexed only where files changed. "
        "Step through the candidates with 'pick'. The node shows the file it chose, its score and the runner-up."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING", "FLOAT", "MAGIC141_PRIOR_FOLDER")
    RETURN_NAMES = ("image", "filename", "score", "prior_folder")
    OUTPUT_TOOLTIPS = ("The retrieved image.", "Its path inside the folder.", "Cosine similarity to the prompt.",
                       "The indexed folder and its CLIP model, for Long Video's shot_priors: each [cut] line of a "
                       "storyboard starts from the image nearest its prompt.")
    FUNCTION = "retrieve"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip_model": (paths.model_folders("clip_vision"), {
                    "tooltip": "A Hugging Face CLIP model folder (e.g. clip-vit-large-patch14) in models/clip_vision."}),
                "prompt": ("STRING", {"multiline": True, "tooltip": "What the start image should show."}),
                "folder": (list(paths.image_folders()), {
                    "tooltip": "A sub-folder of ComfyUI's input folder (or of a magic141_priors folder set in "
                               "extra_model_paths.yaml) holding the candidate images."}),
                "k": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "How many best matches to rank."}),
                "pick": ("INT", {"default": 0, "min": 0, "max": 255,
                                 "tooltip": "Which of the ranked matches to use: 0 is the best."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def retrieve(self, clip_model, prompt, folder, k, pick, unique_id=None):
        if not prompt.strip():
            raise ValueError("the prompt is empty; describe the image to retrieve")
        if folder not in paths.image_folders():
            raise ValueError(f"unknown image folder {folder!r}; put images in a sub-folder of ComfyUI's input folder")
        root, relative = paths.image_folders()[folder]
        images = resolve_inside(root, relative)
        embedder = _embedder(clip_model)
        index = ImageIndex(images, roots=[root])  # every file read must resolve inside input/ (or the priors root)
        index.update(embedder, progress=progress.progress_callback())
        matches = index.query(embedder.embed_text([prompt])[0], k)
        if pick >= len(matches):
            raise ValueError(f"pick {pick} is past the {len(matches)} matches found; use 0..{len(matches) - 1}")
        match = matches[pick]
        path = file_inside(match.path, [root])  # checked again right before reading
        progress.show_text(unique_id, choice_text(matches, pick, images))
        return (load_image(path), match.path.relative_to(images).as_posix(), match.score,
                FolderPrior(index, embedder))

    @classmethod
    def IS_CHANGED(cls, folder, **_):
        """Re-run when the folder's images change (added, removed, renamed, edited), and only then: ComfyUI compares
        this value (with the inputs) to the last run's. An unknown folder returns NaN (never equal: run and report)."""
        entry = paths.image_folders().get(folder)
        if entry is None:
            return float("nan")
        try:
            return folder_fingerprint(resolve_inside(*entry))
        except (OSError, ValueError):
            return float("nan")


def choice_text(matches, pick: int, folder) -> str:
    """What the node shows: the file chosen (rank `pick` of `matches`, best first) with its score, and the runner-up
    (or, for a later pick, the best match)."""
    def name(match):
        return f"{match.path.relative_to(folder).as_posix()} (score {match.score:.2f})"

    text = f"chose {name(matches[pick])}"
    if pick:
        text += f", match {pick + 1}; the best: {name(matches[0])}"
    elif len(matches) > 1:
        text += f"; runner-up: {name(matches[1])}"
    else:
        text += "; no runner-up (k is 1, or the folder holds one image)"
    if all(m.score == 0 for m in matches):
        text += ". Every score is 0: the CLIP model knows no word of this prompt"
    return text


PRIORS = ("generated", "retrieved", "uploaded")


class Magic141PriorSwitch:
    DESCRIPTION = (
        "Chooses the prior image from up to three sources with one click. Inputs are lazy: only the chosen branch "
        "runs, and switching re-runs only the nodes after this one (the encoders' cache makes a repeated image free)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The chosen prior image.",)
    FUNCTION = "switch"

    @classmethod
    def INPUT_TYPES(cls):
        image = ("IMAGE", {"lazy": True, "tooltip": "A prior image source (optional)."})
        return {
            "required": {"use": (list(PRIORS), {"default": "generated", "tooltip": "Which input becomes the prior."})},
            "optional": dict.fromkeys(PRIORS, image),
        }

    def check_lazy_status(self, use, **inputs):
        return [use] if inputs.get(use) is None else []

    def switch(self, use, **inputs):
        if inputs.get(use) is None:
            raise ValueError(f"the '{use}' input is not connected; connect an image to it or choose another prior")
        return (inputs[use],)


NODE_CLASS_MAPPINGS = {"Magic141RetrievePrior": Magic141RetrievePrior, "Magic141PriorSwitch": Magic141PriorSwitch}
NODE_DISPLAY_NAME_MAPPINGS = {"Magic141RetrievePrior": "Magic141 Retrieve Prior",
                              "Magic141PriorSwitch": "Magic141 Prior Switch"}
