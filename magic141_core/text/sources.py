"""Where the encoder weights come from, checked before anything loads: a missing file is named, with where it goes.

Two layouts are accepted for each encoder (see docs/encoders.md):
- a Hugging Face folder (config + safetensors + tokenizer files), loaded with `local_files_only=True`;
- the single files ComfyUI's HunyuanVideo workflow uses, plus a folder with the tokenizer files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..runtime.text_file import read_text

PathLike = str | os.PathLike
MAX_INDEX_BYTES = 8 << 20  # model.safetensors.index.json: an 8B model's is about 25 KB
LLAVA_CONFIG_KEY = "magic141_llava_config"  # metadata of a self-contained (int8) LLaVA file written by this pack

WHERE_FILES_GO = """\
Magic141 needs these encoder files (docs/encoders.md):
  ComfyUI HunyuanVideo files (the same ones HunyuanVideo workflows use):
    ComfyUI/models/text_encoders/llava_llama3_fp16.safetensors (or llava_llama3_fp8_scaled.safetensors)
    ComfyUI/models/clip_vision/llava_llama3_vision.safetensors
    ComfyUI/models/text_encoders/clip_l.safetensors
    tokenizers: ComfyUI/comfy/text_encoders/llama_tokenizer/ and ComfyUI/comfy/sd1_tokenizer/ (shipped with ComfyUI)
  or Hugging Face folders:
    ComfyUI/models/text_encoders/llava-llama-3-8b-v1_1-transformers/  (xtuner/llava-llama-3-8b-v1_1-transformers:
        config.json, model*.safetensors [+ model.safetensors.index.json], tokenizer.json, tokenizer_config.json,
        preprocessor_config.json)
    ComfyUI/models/text_encoders/clip-vit-large-patch14/  (openai/clip-vit-large-patch14: config.json,
        model.safetensors, vocab.json + merges.txt or tokenizer.json, tokenizer_config.json)
Nothing is ever downloaded: copy the files there yourself."""


def is_int8_llava(path: PathLike) -> bool:
    """True for a pre-quantized LLaVA file written by `loading.save_llava` (its config is in the metadata)."""
    from ..weights import read_metadata

    return LLAVA_CONFIG_KEY in read_metadata(path)


def _missing_tokenizer_files(folder: Path) -> list[str]:
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file():
        return []
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return []
    return ["tokenizer.json (or vocab.json + merges.txt)"]


def missing_weights(folder: Path) -> list[str]:
    """Missing or empty safetensors of a Hugging Face folder, shards of an index included; a folder with only pickle
    weights (pytorch_model.bin) is named as such: those are never read."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(read_text(index, MAX_INDEX_BYTES, "the shard index"))["weight_map"]
                                .values()))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            return [f"a readable model.safetensors.index.json ({e})"]
    elif (folder / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        note = (f"; the folder holds only {', '.join(pickles)}, and Hugging Face folders are read with safetensors "
                "only (pickle files can run code)") if pickles else ""
        return [f"model.safetensors (or model-*-of-*.safetensors with model.safetensors.index.json){note}"]
    missing = [s for s in shards if not (folder / s).is_file()]
    empty = [f"{s} (empty file)" for s in shards if (folder / s).is_file() and (folder / s).stat().st_size == 0]
    return missing + empty


def _folder_problem(what: str, folder: Path, tokenizer: Path | None) -> str | None:
    if not folder.is_dir():
        return f"{what} at {folder} is missing (no such folder)"
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    missing += missing_weights(folder)
    missing += _missing_tokenizer_files(Path(tokenizer or folder))
    return f"{what} at {folder} is incomplete; missing: {', '.join(missing)}" if missing else None


def _files_problem(what: str, files: list[tuple], tokenizer, tokenizer_home: str) -> str | None:
    """files: (path or None, description, where it belongs in ComfyUI)."""
    missing = [f"{desc} ({path or 'not given'}) -> {home}" for path, desc, home in files
               if path is None or not Path(path).is_file()]
    if tokenizer is None or not Path(tokenizer).is_dir():
        missing.append(f"its tokenizer folder ({tokenizer or 'not given'}) -> {tokenizer_home}")
    else:
        missing += [f"{m} in {tokenizer}" for m in _missing_tokenizer_files(Path(tokenizer))]
    return f"{what} is incomplete; missing: {', '.join(missing)}" if missing else None


def check_sources(*sources):
    """Raise FileNotFoundError naming every missing file of every source, and where each belongs."""
    problems = [p for source in sources if (p := source.problem()) is not None]
    if problems:
        raise FileNotFoundError("\n".join(problems) + "\n" + WHERE_FILES_GO)


def _stat_entries(paths) -> list:
    out = []
    for p in paths:
        p = Path(p).resolve()
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")) if p.is_dir() else [p]
        out += [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return out


class _Source:
    """What both encoder sources share: a Hugging Face `folder`, or single files; `problem()` says what is missing."""

    folder: Path | None

    @property
    def is_folder(self) -> bool:
        return self.folder is not None

    def check(self):
        check_sources(self)


@dataclass(frozen=True)
class LlavaSource(_Source):
    """The LLaVA-Llama-3 model: a Hugging Face `folder`, or ComfyUI's `text_encoder` + `vision` files.

    tokenizer: a folder with the Llama-3 tokenizer files; defaults to `folder`, required with the ComfyUI files.
    """

    folder: Path | None = None
    text_encoder: Path | None = None
    vision: Path | None = None
    tokenizer: Path | None = None

    def problem(self) -> str | None:
        if self.is_folder:
            return _folder_problem("the LLaVA-Llama-3 folder", Path(self.folder), self.tokenizer)
        files = [(self.text_encoder, "the Llama-3 text encoder file",
                  "ComfyUI/models/text_encoders/llava_llama3_fp16.safetensors")]
        if not self.is_self_contained:
            files.append((self.vision, "the LLaVA vision file",
                          "ComfyUI/models/clip_vision/llava_llama3_vision.safetensors"))
        return _files_problem("the LLaVA-Llama-3 encoder (ComfyUI files)", files, self.tokenizer,
                              "ComfyUI/comfy/text_encoders/llama_tokenizer/")

    @property
    def is_self_contained(self) -> bool:
        """The text encoder file is this pack's int8 LLaVA file, which holds the vision tower too."""
        from ..weights import CheckpointError

        if self.text_encoder is None or not Path(self.text_encoder).is_file():
            return False
        try:
            return is_int8_llava(self.text_encoder)
        except CheckpointError:
            return False  # loading names the damage

    def paths(self) -> list[Path]:
        return [Path(p) for p in (self.folder, self.text_encoder, self.vision, self.tokenizer) if p is not None]


@dataclass(frozen=True)
class ClipSource(_Source):
    """The CLIP-L text model: a Hugging Face `folder`, or ComfyUI's `file` (clip_l.safetensors).

    tokenizer: a folder with the CLIP tokenizer files; defaults to `folder`, required with the ComfyUI file.
    """

    folder: Path | None = None
    file: Path | None = None
    tokenizer: Path | None = None

    def problem(self) -> str | None:
        if self.is_folder:
            return _folder_problem("the CLIP-L folder", Path(self.folder), self.tokenizer)
        return _files_problem(
            "the CLIP-L encoder (ComfyUI file)",
            [(self.file, "the CLIP-L file", "ComfyUI/models/text_encoders/clip_l.safetensors")],
            self.tokenizer, "ComfyUI/comfy/sd1_tokenizer/",
        )

    def paths(self) -> list[Path]:
        return [Path(p) for p in (self.folder, self.file, self.tokenizer) if p is not None]


def sources_identity(llava: LlavaSource, clip: ClipSource, dtype) -> str:
    """A short id of these weights (paths, sizes, modification times) and dtype: part of every cache key."""
    entries = [_stat_entries(llava.paths()), _stat_entries(clip.paths()), str(dtype)]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:32]
