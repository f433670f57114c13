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

from .checkpoints import read_metadata, read_state_dict, save_safetensors
from .image_files import IMAGE_SUFFIXES, ImageFileError, open_rgb

log = logging.getLogger(__name__)

INDEX_NAME = ".magic141_index.safetensors"
_INDEX_FORMAT = "magic141-clip-index-v1"


def resolve_inside(root: str | os.PathLike, relative: str) -> Path:
    """`root / relative`, refusing anything that leaves `root`: '..', absolute paths, symlinks pointing out."""
    root = Path(root).resolve()
    if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ValueError(f"folder {relative!r} must be a relative path inside {root} (no '..', not absolute)")
    path = (root / relative).resolve()  # follows symlinks
    if path != root and root not in path.parents:
        raise ValueError(f"folder {relative!r} resolves outside {root} (a symlink pointing out?); refused")
    return path


class ClipEmbedder:
    """CLIP image and text embeddings (projected, L2-normalised) from a local `CLIPModel` folder."""

    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu", dtype=torch.float32):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        folder = Path(folder)
        missing = [f for f in ("config.json", "preprocessor_config.json") if not (folder / f).is_file()]
        if not folder.is_dir() or missing:
            raise FileNotFoundError(
                f"{folder} is not a CLIP model folder (missing {missing or 'the folder'}); put a Hugging Face CLIPModel "
                "(config.json, model.safetensors, tokenizer and preprocessor files) there"
            )
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True, torch_dtype=dtype).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
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
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        features = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
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
    """CLIP embeddings of every image under `folder` (recursively), stored in `index_path`."""

    def __init__(self, folder: str | os.PathLike, index_path: str | os.PathLike | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.folder}")
        self.index_path = Path(index_path) if index_path else self.folder / INDEX_NAME
        self.keys: list[tuple[str, int, int]] = []  # (relative path, size, mtime_ns) per row
        self.embeddings = torch.zeros(0, 0)
        self.model_identity = ""
        if self.index_path.is_file():
            self._load()

    def _load(self):
        meta = read_metadata(self.index_path)
        if meta.get("format") != _INDEX_FORMAT:
            log.warning("ignoring %s: not a Magic141 index (it will be rebuilt)", self.index_path)
            return
        self.keys = [tuple(k) for k in json.loads(meta["files"])]
        self.model_identity = meta["model"]
        self.embeddings = read_state_dict(self.index_path)["embeddings"]

    def save(self):
        save_safetensors({"embeddings": self.embeddings.contiguous()}, self.index_path,
                         {"format": _INDEX_FORMAT, "model": self.model_identity, "files": json.dumps(self.keys)})

    def scan(self) -> Iterator[tuple[str, int, int]]:
        """(relative path, size, mtime_ns) of every image file under the folder, sorted."""
        return self.scan_folder(self.folder)

    @staticmethod
    def scan_folder(folder: Path) -> Iterator[tuple[str, int, int]]:
        """(relative path, size, mtime_ns) of every image file under `folder` (by suffix), sorted."""
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
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
            return open_rgb(self.folder / relative, cover=(size, size))
        except (ImageFileError, OSError) as e:  # one bad file never fails the folder
            log.warning("skipping %s in %s: %s", relative, self.folder, e)
            return None

    def query(self, text_embedding: torch.Tensor, k: int = 5) -> list[Match]:
        """The `k` images most similar to a normalised embedding [D] (or [1, D]), best first."""
        if len(self.keys) == 0:
            raise ValueError(f"the index of {self.folder} is empty; add images and index it first")
        scores = self.embeddings @ text_embedding.reshape(-1).to(self.embeddings.dtype)
        top = torch.topk(scores, min(k, len(self.keys)))
        return [Match(self.folder / self.keys[i][0], float(s)) for s, i in zip(top.values, top.indices)]


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
