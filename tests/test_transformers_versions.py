"""The encoders under transformers 4.5x and 5.x (scripts/test.sh runs this file under both): files written in either
module layout load into the installed one, and loading says nothing deprecated."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from tiny_clip import save_tiny_clip
from tiny_llava import PROMPTS, build_tiny_encoders, one_thread, random_image  # noqa: F401

from magic141_core.weights import save_safetensors
from magic141_core.text import Magic141Encoders
from magic141_core.text.comfy_keys import flat_key

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_encoders(tmp_path_factory.mktemp("encoders"))


def _encoders(tiny, vision, clip_l):
    return Magic141Encoders.from_comfyui_files(tiny["files"]["llava_llama3_fp16"], vision, clip_l,
                                               tiny["llama_tok_dir"], tiny["clip_tok_dir"], device="cpu",
                                               dtype=torch.float32)


def _other_layout(key: str) -> str:
    """A LLaVA tensor name in the other transformers' layout: 4.x nests the vision tower (`vision_tower.vision_model.`),
    5.x does not (`vision_tower.`)."""
    if not key.startswith("vision_tower."):
        return key
    if flat_key(key) != key:
        return flat_key(key)
    return "vision_tower.vision_model." + key.removeprefix("vision_tower.")


def test_an_int8_llava_file_saved_under_either_transformers_loads_to_the_same_numbers(tiny, tmp_path):
    """A Save-int8 LLaVA file holds the vision tower under the names of the transformers that wrote it; a file from
    the other major version loads into the installed one to identical encodings."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from magic141_core.text.loading import save_llava

    f = tiny["files"]
    enc = Magic141Encoders.from_comfyui_files(f["llava_llama3_fp16"], f["llava_llama3_vision"], f["clip_l"],
                                              tiny["llama_tok_dir"], tiny["clip_tok_dir"], device="cpu",
                                              dtype=torch.float32, int8=True).load()
    here = tmp_path / "llava_int8_here.safetensors"
    save_llava(enc.llava.model, here)
    with safe_open(here, "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(here)
    other = {_other_layout(k): v for k, v in tensors.items()}
    assert set(other) != set(tensors)  # the vision tower's names really differ between the two layouts
    there = tmp_path / "llava_int8_other_layout.safetensors"
    save_safetensors(other, there, metadata)
    image = random_image(5)

    def encode(path):
        return Magic141Encoders.from_comfyui_files(path, None, f["clip_l"], tiny["llama_tok_dir"],
                                                   tiny["clip_tok_dir"], device="cpu",
                                                   dtype=torch.float32).encode(PROMPTS[1], image).positive

    a, b = encode(here), encode(there)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)


def test_loading_the_encoders_and_the_retrieval_clip_warns_of_nothing_deprecated(tiny, tmp_path, caplog):
    from magic141_core.priors import ClipEmbedder

    clip_folder = save_tiny_clip(tmp_path / "clip")
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        Magic141Encoders.from_folders(tiny["llava_dir"], tiny["clip_dir"], device="cpu", dtype=torch.float32).load()
        _encoders(tiny, tiny["files"]["llava_llama3_vision"], tiny["files"]["clip_l"]).load()
        embedder = ClipEmbedder(clip_folder)
        embedder.embed_images([random_image_pil()])
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    for words in ("deprecated", "torch_dtype", "slow image processor", "use_fast", "requires torchvision"):
        assert not [s for s in said if words in s], (words, said)


def random_image_pil():
    from PIL import Image

    return Image.fromarray((random_image(3)[0].numpy() * 255).astype("uint8"), "RGB")
