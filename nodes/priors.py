"""Image priors: the retrieval prior (the image nearest the prompt by CLIP) and a switch between priors."""

from __future__ import annotations

from ..magic141_core.priors import ClipEmbedder, FolderPrior, ImageIndex, file_inside, folder_fingerprint, \
    resolve_inside
from ..magic141_core.video.image_files import load_image
from .common import CATEGORY
from .host import memory, paths, progress
from .host.schema import PRIOR_FOLDER, choice, io

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


class Magic141RetrievePrior(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141RetrievePrior",
            display_name="Magic141 Retrieve Prior",
            category=CATEGORY,
            description=(
                "Picks the start image by retrieval: the image in a folder whose CLIP embedding is nearest the prompt "
                "(the Magic141 paper's retrieval prior). The folder is indexed once and re-indexed only where files "
                "changed. Step through the candidates with 'pick'. The node shows the file it chose, its score and "
                "the runner-up."),
            inputs=[
                io.Combo.Input("clip_model", options=paths.model_folders("clip_vision"), tooltip=(
                    "A Hugging Face CLIP model folder (e.g. clip-vit-large-patch14) in models/clip_vision.")),
                io.String.Input("prompt", multiline=True, tooltip="What the start image should show."),
                io.Combo.Input("folder", options=list(paths.image_folders()), tooltip=(
                    "A sub-folder of ComfyUI's input folder (or of a magic141_priors folder set in "
                    "extra_model_paths.yaml) holding the candidate images.")),
                io.Int.Input("k", default=8, min=1, max=256, tooltip="How many best matches to rank."),
                io.Int.Input("pick", default=0, min=0, max=255,
                             tooltip="Which of the ranked matches to use: 0 is the best."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The retrieved image."),
                io.String.Output(display_name="filename", tooltip="Its path inside the folder."),
                io.Float.Output(display_name="score", tooltip="Cosine similarity to the prompt."),
                PRIOR_FOLDER.Output(display_name="prior_folder", tooltip=(
                    "The indexed folder and its CLIP model, for Long Video's shot_priors: each [cut] line of a "
                    "storyboard starts from the image nearest its prompt.")),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, clip_model, prompt, folder, k, pick) -> io.NodeOutput:
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
        progress.show_text(cls.hidden.unique_id, choice_text(matches, pick, images))
        return io.NodeOutput(load_image(path), match.path.relative_to(images).as_posix(), match.score,
                             FolderPrior(index, embedder))

    @classmethod
    def fingerprint_inputs(cls, folder, **_):
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


class Magic141PriorSwitch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141PriorSwitch",
            display_name="Magic141 Prior Switch",
            category=CATEGORY,
            description=(
                "Chooses the prior image from up to three sources with one click. Inputs are lazy: only the chosen "
                "branch runs, and switching re-runs only the nodes after this one (the encoders' cache makes a "
                "repeated image free)."),
            inputs=[io.Combo.Input("use", options=list(PRIORS), default="generated",
                                   tooltip="Which input becomes the prior."),
                    *(io.Image.Input(name, optional=True, lazy=True, tooltip="A prior image source (optional).")
                      for name in PRIORS)],
            outputs=[io.Image.Output(tooltip="The chosen prior image.")],
        )

    @classmethod
    def check_lazy_status(cls, use, **inputs):
        return [use] if use in PRIORS and inputs.get(use) is None else []

    @classmethod
    def execute(cls, use, **inputs) -> io.NodeOutput:
        use = choice(use, PRIORS, "use", "Magic141 Prior Switch")
        if inputs.get(use) is None:
            raise ValueError(f"the '{use}' input is not connected; connect an image to it or choose another prior")
        return io.NodeOutput(inputs[use])


NODES = [Magic141RetrievePrior, Magic141PriorSwitch]
