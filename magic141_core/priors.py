"""Retrieval prior: the image in a folder whose CLIP embedding is nearest the prompt (Magic141 paper, §2).

`ClipEmbedder` wraps a transformers `CLIPModel` from a local folder (Hugging Face layout; never downloaded).
`ImageIndex` keeps one L2-normalised image embedding per file, keyed by relative path + size + mtime, in a
safetensors file written atomically; `update` embeds only new or changed files (in batches, with progress) and
forgets deleted ones, so re-indexing a large folder costs only what changed and memory stays flat.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .video.image_files import IMAGE_SUFFIXES, ImageFileError, load_image, open_rgb
from .weights import CheckpointError, read_metadata, read_state_dict, save_safetensors

log = logging.getLogger(__name__)

INDEX_NAME = ".magic141_index.safetensors"
_INDEX_FORMAT = "magic141-clip-index-v1"


def resolve_inside(root: str | os.PathLike, relative: str) -> Path:
    """`root / relative`, refusing anything that leaves `root`: '..', absolute paths, symlinks pointing out."""
    root = Path(root).resolve()
    if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ValueError(f"folder {relative!r} must be a relative path inside {root} (no '..', not absolute)")
    path = (root / relative).resolve()  # follows symlinks
    if not is_inside(path, [root]):
        raise ValueError(f"folder {relative!r} resolves outside {root} (a symlink pointing out?); refused")
    return path


def is_inside(path: str | os.PathLike, roots) -> bool:
    """True when `path`, with every symlink followed, is one of the `roots` (resolved) or lies under one."""
    resolved = Path(path).resolve()
    return any(resolved == root or root in resolved.parents for root in (Path(r).resolve() for r in roots))


def file_inside(path: str | os.PathLike, roots) -> Path:
    """`path` resolved (symlinks followed), or ValueError when it lands outside every root: a file symlink inside an
    allowed folder that points at a private file elsewhere is never read. Check right before reading."""
    if not is_inside(path, roots):
        raise ValueError(f"{Path(path).name} is a link to a file outside the allowed folders; refused. Copy the "
                         "image into the folder instead of linking it")
    return Path(path).resolve()


class ClipEmbedder:
    """CLIP image and text embeddings (projected, L2-normalised) from a local `CLIPModel` folder."""

    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu", dtype=torch.float32):
        from transformers import AutoTokenizer, CLIPModel

        from .text.images import load_image_processor
        from .text.loading import dtype_kwarg
        from .text.sources import missing_weights

        folder = Path(folder)
        missing = [f for f in ("config.json", "preprocessor_config.json") if not (folder / f).is_file()]
        if not folder.is_dir() or missing:
            raise FileNotFoundError(
                f"{folder} is not a CLIP model folder (missing {missing or 'the folder'}); put a Hugging Face CLIPModel "
                "(config.json, model.safetensors, tokenizer and preprocessor files) there"
            )
        if missing_weights(folder):  # safetensors only: pickle weights (pytorch_model.bin) are never read
            raise FileNotFoundError(
                f"the CLIP folder {folder} has no usable safetensors weights (missing: "
                f"{', '.join(missing_weights(folder))}); use a folder with model.safetensors, e.g. "
                "openai/clip-vit-large-patch14")
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                               **dtype_kwarg(dtype)).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.processor = load_image_processor(folder)
        # CLIP's position table bounds the prompt; tokenizers without model_max_length would not truncate by default
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)
        weights = sorted(folder.glob("*.safetensors"))
        stamp = [(w.name, w.stat().st_size) for w in weights] + [(folder / "config.json").read_text()]
        self.identity = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        """The side of CLIP's square input (the processor's crop), in pixels."""
        crop = getattr(self.processor, "crop_size", None) or {}
        return int(crop.get("height", 0) or getattr(self.processor, "size", {}).get("shortest_edge", 224))

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        """[N, D] L2-normalised embeddings of RGB PIL images (told channels-last, so 1-pixel-high images work)."""
        pixels = self.processor(images=images, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
        features = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
        return _normalized(features)

    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings [N, D]; prompts longer than CLIP's position table (77 tokens for CLIP-L)
        are truncated to it, as the encoders' CLIP-L does."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt").to(self.device)
        features = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return _normalized(features)


def _normalized(features) -> torch.Tensor:
    """[N, D] L2-normalised fp32 CPU embeddings from `get_*_features`: a tensor in transformers 4, an output whose
    `pooler_output` holds the projected embeddings in transformers 5."""
    if not isinstance(features, torch.Tensor):
        features = features.pooler_output
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


@dataclass
class Match:
    path: Path
    score: float  # cosine similarity


@dataclass
class UpdateStats:
    embedded: int = 0
    removed: int = 0
    kept: int = 0
    skipped: int = 0


class ImageIndex:
    """CLIP embeddings of every image under `folder` (recursively), stored in `index_path`.

    `roots`: the folders reads may resolve into (default: `folder`). A file whose real path (symlinks followed) is
    outside them is skipped when scanning, dropped when an index is loaded, and refused when read or returned, each
    time checked again, so a link swapped in after indexing is caught too."""

    def __init__(self, folder: str | os.PathLike, index_path: str | os.PathLike | None = None, roots=None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.folder}")
        self.roots = [Path(r).resolve() for r in (roots or [self.folder])]
        self.index_path = Path(index_path) if index_path else self.folder / INDEX_NAME
        if self.index_path.suffix != ".safetensors":
            raise ValueError(f"the index file {self.index_path} must be a .safetensors file name")
        self.keys: list[tuple[str, int, int]] = []  # (relative path, size, mtime_ns) per row
        self.embeddings = torch.zeros(0, 0)
        self.model_identity = ""
        self.rebuilt = ""  # why a damaged index is being rebuilt from scratch ("" when it was read)
        # the default index lives in the folder: a link there pointing out of the roots is not read (saving replaces it)
        if os.path.lexists(self.index_path) and (index_path is not None or is_inside(self.index_path, self.roots)):
            self._load()

    def _load(self):
        """Read the index. A damaged one (unreadable, a field missing, rows not matching the files) is rebuilt from
        scratch on the next `update`, with a warning; a file that is not an index at all is never written over."""
        try:
            meta = read_metadata(self.index_path) if self.index_path.is_file() else {}
        except CheckpointError as e:
            meta, damage = {}, str(e).split(";")[0]
        else:
            damage = "" if self.index_path.is_file() else "not a regular file"
        if meta.get("format") != _INDEX_FORMAT and self.index_path.name != INDEX_NAME:
            raise FileExistsError(f"the index file {self.index_path} exists and is not a Magic141 retrieval index; it "
                                  "is not written over. Choose another index path, or move that file away")
        if not damage:
            try:
                keys = [(str(name), int(size), int(mtime)) for name, size, mtime in json.loads(meta["files"])]
                embeddings = read_state_dict(self.index_path)["embeddings"]
                if embeddings.ndim != 2 or len(embeddings) != len(keys) or not torch.isfinite(embeddings).all():
                    raise ValueError(f"{len(keys)} files but embeddings of shape {tuple(embeddings.shape)}")
                rows = [i for i, k in enumerate(keys) if self._allowed(k[0])]  # an index never yields a path outside
                self.keys, self.model_identity = [keys[i] for i in rows], str(meta["model"])
                self.embeddings = embeddings[rows].float() if rows else torch.zeros(0, 0)
                return
            except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
                damage = f"{type(e).__name__}: {e}" if isinstance(e, KeyError) else str(e)
        self.rebuilt = damage[:200]
        log.warning("the retrieval index %s is damaged (%s); rebuilding it from the images", self.index_path,
                    self.rebuilt)

    def save(self):
        """Write the index atomically over the previous index (its own file; never over anything else)."""
        save_safetensors({"embeddings": self.embeddings.contiguous()}, self.index_path,
                         {"format": _INDEX_FORMAT, "model": self.model_identity, "files": json.dumps(self.keys)},
                         overwrite=True)

    def _allowed(self, relative: str) -> bool:
        """A stored or scanned relative path that stays inside the folder and resolves inside the roots."""
        rel = Path(relative)
        return not rel.is_absolute() and ".." not in rel.parts and is_inside(self.folder / rel, self.roots)

    def scan(self) -> Iterator[tuple[str, int, int]]:
        """(relative path, size, mtime_ns) of every image file under the folder whose real path is inside the
        roots, sorted; links pointing outside are skipped with a warning."""
        return self.scan_folder(self.folder, self.roots, skip=self.index_path)

    @staticmethod
    def scan_folder(folder: Path, roots=None, skip: Path | None = None) -> Iterator[tuple[str, int, int]]:
        """(relative path, size, mtime_ns) of every image file under `folder` (by suffix), sorted; with `roots`, a
        file whose real path leaves them (a link pointing out) is skipped with a warning."""
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and path != skip:
                if roots is not None and not is_inside(path, roots):
                    log.warning("skipping %s: a link to a file outside the allowed folders", path.name)
                    continue
                stat = path.stat()
                yield path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns

    def update(self, embedder: ClipEmbedder, batch_size: int = 32,
               progress: Callable[[int, int], None] | None = None) -> UpdateStats:
        """Embed new and changed files, drop deleted ones, save. `progress(done, total)` after each batch."""
        if self.model_identity != embedder.identity:  # another CLIP model: every embedding is stale
            self.keys, self.embeddings = [], torch.zeros(0, 0)
        current = list(self.scan())
        known = {key: row for row, key in enumerate(self.keys)}
        keep = [key for key in current if key in known]
        todo = [key for key in current if key not in known]
        stats = UpdateStats(kept=len(keep), removed=len(self.keys) - len(keep))
        rows = [self.embeddings[known[key]] for key in keep]
        new_keys, new_rows = list(keep), rows
        for start in range(0, len(todo), batch_size):
            batch, images = [], []
            for key in todo[start:start + batch_size]:
                image = self._open(key[0], embedder.image_size)
                if image is None:
                    stats.skipped += 1
                else:
                    batch.append(key)
                    images.append(image)
            if images:
                new_rows += list(embedder.embed_images(images))
                new_keys += batch
                stats.embedded += len(images)
            if progress is not None:
                progress(min(start + batch_size, len(todo)), len(todo))
        self.keys = new_keys
        self.embeddings = torch.stack(new_rows) if new_rows else torch.zeros(0, 0)
        self.model_identity = embedder.identity
        self.save()
        return stats

    def _open(self, relative: str, size: int) -> Image.Image | None:
        try:
            return open_rgb(file_inside(self.folder / relative, self.roots), cover=(size, size))
        except (ImageFileError, OSError, ValueError) as e:  # one bad file (or a link out) never fails the folder
            log.warning("skipping %s in %s: %s", relative, self.folder, e)
            return None

    def query(self, text_embedding: torch.Tensor, k: int = 5) -> list[Match]:
        """The `k` images most similar to a normalised embedding [D] (or [1, D]), best first."""
        if len(self.keys) == 0:
            raise ValueError(f"the index of {self.folder} is empty; add images and index it first")
        scores = self.embeddings @ text_embedding.reshape(-1).to(self.embeddings.dtype)
        top = torch.topk(scores, min(k, len(self.keys)))
        matches = [Match(self.folder / self.keys[i][0], float(s)) for s, i in zip(top.values, top.indices)]
        return [m for m in matches if is_inside(m.path, self.roots)]  # a link swapped in since indexing: dropped


class FolderPrior:
    """An indexed image folder and its CLIP model, asked for one image per prompt: the prior of each shot of a
    storyboard (the Long Video node's `shot_priors`, the CLI's `long --prior-folder`). The index is brought up to
    date once, when this is made; every file read resolves inside `index.roots`."""

    def __init__(self, index: ImageIndex, embedder: ClipEmbedder):
        self.index, self.embedder = index, embedder

    def best(self, prompt: str) -> tuple[torch.Tensor, str]:
        """The image nearest `prompt` as IMAGE [1, H, W, 3] float 0..1, and what it is ("<file> (score 0.31)")."""
        matches = self.index.query(self.embedder.embed_text([prompt])[0], 1)
        if not matches:  # the one match was a link swapped in since indexing
            raise ValueError(f"no usable image in {self.index.folder} for the prompt {prompt!r}")
        match = matches[0]
        image = load_image(file_inside(match.path, self.index.roots))
        return image, f"{match.path.relative_to(self.index.folder).as_posix()} (score {match.score:.2f})"


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """A hash of which images a folder holds and their sizes and modification times (no pixels are read): it
    changes when an image is added, removed, renamed or edited, and only then. Retrieve Prior's IS_CHANGED."""
    keys = list(ImageIndex.scan_folder(Path(folder)))
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()


def retrieve(folder, prompt: str, embedder: ClipEmbedder, k: int = 5, index_path=None,
             progress: Callable[[int, int], None] | None = None) -> list[Match]:
    """Bring the folder's index up to date, then return the `k` best images for `prompt`."""
    index = ImageIndex(folder, index_path)
    index.update(embedder, progress=progress)
    return index.query(embedder.embed_text([prompt])[0], k)
