"""The retrieval demo: three prior images and a hand-set CLIP that matches a prompt's colour words to them.

An untrained CLIP ranks images at random, which shows nothing. This one is just as untrained, but its weights are
set by hand (like the passthrough DiT) so that retrieval visibly works on colours:
- the image side embeds an image as its mean colour: the patch convolution averages each 32 px patch, one attention
  layer averages the patches into the class token, the projection keeps the colour's chroma (RGB minus its mean);
- the text side embeds a prompt as the sum of its known words' colours: each known word's token embedding holds a
  colour (`WORD_COLOURS`: colour names, and the themes of the three demo priors), one causal attention layer averages
  the tokens into the end-of-text token, the projection keeps the chroma.
So cosine similarity compares the prompt's colour with the image's: "a quiet harbour at dawn" finds the warm
`dawn_harbour.png`, "a green park" the green `forest_path.png`, "neon city at night" the blue `night_city.png`.
It knows ~40 words (nothing else moves its text embedding: a prompt without one scores 0 against every image) and
sees colour only, no shapes: a real CLIP model (e.g. clip-vit-large-patch14) replaces it for real retrieval.

Two tricks keep every layer linear in the colours (the same as `passthrough.py`): each LayerNorm sees a large constant
pair (+K, -K), so it divides by a nearly fixed number, and reads subtract a channel that holds 0 (or sum to zero), so
the mean it subtracts cancels. Attention with zero queries and keys is a plain average over the tokens it may see.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

# name -> the colour the image is painted in (RGB in 0..1) and the words of its theme
DEMO_PRIORS = {
    "dawn_harbour": ((0.9, 0.6, 0.4), ("dawn", "sunrise", "sunset", "harbour", "harbor", "boats", "boat", "fishing",
                                       "beach", "lighthouse")),
    "forest_path": ((0.3, 0.7, 0.3), ("forest", "trees", "tree", "path", "leaves", "woods", "grass", "park",
                                      "garden")),
    "night_city": ((0.2, 0.2, 0.6), ("night", "city", "street", "neon", "moon", "stars", "dark", "skyline")),
}
COLOURS = {"red": (1.0, 0.0, 0.0), "orange": (1.0, 0.5, 0.0), "yellow": (1.0, 1.0, 0.0), "golden": (1.0, 0.8, 0.2),
           "gold": (1.0, 0.8, 0.2), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "purple": (0.5, 0.0, 1.0),
           "violet": (0.5, 0.0, 1.0), "pink": (1.0, 0.4, 0.7), "brown": (0.6, 0.3, 0.1)}
WORD_COLOURS = COLOURS | {word: colour for colour, words in DEMO_PRIORS.values() for word in words}

HIDDEN, ANCHOR = 64, 32.0
_COLOUR, _MEAN, _ZERO, _ANCHOR = 0, 8, 16, HIDDEN - 2  # channels: own colour, averaged colour, a zero, (+K, -K)
PATCH, IMAGE_SIZE = 32, 224
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's processor


def write_demo_priors(folder: str | Path) -> list[Path]:
    """The three demo prior images (480x272 PNGs, each a wave of its colour) that are missing in `folder`."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:272, 0:480] / np.array([272.0, 480.0])[:, None, None]
    paths = []
    for i, (name, (colour, _)) in enumerate(DEMO_PRIORS.items()):
        path = folder / f"{name}.png"
        if not path.exists():
            rgb = np.stack([np.clip(c * (0.5 + 0.5 * np.sin(6 * x + 4 * y + i)), 0, 1) for c in colour], -1)
            Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _layer_norms_identity(module) -> None:
    for norm in module.modules():
        if isinstance(norm, torch.nn.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()


def _averaging_layer(layer, gain: float) -> None:
    """Encoder layer 0: attention averages each token's colour (minus the zero channel) over the tokens it sees,
    written to the _MEAN channels x `gain`; the MLP adds nothing."""
    attention = layer.self_attn
    for c in range(3):
        attention.v_proj.weight[_COLOUR + c, _COLOUR + c] = 1.0
        attention.v_proj.weight[_COLOUR + c, _ZERO] = -1.0
        attention.out_proj.weight[_MEAN + c, _COLOUR + c] = gain


def _chroma_projection(projection) -> None:
    """Embedding dims 0-2 = the averaged colour minus its mean over R, G, B (each row sums to 0, so the shift
    LayerNorm subtracted cancels)."""
    for i in range(3):
        for j in range(3):
            projection.weight[i, _MEAN + j] = (i == j) - 1 / 3


@torch.no_grad()
def handset_clip(tokenizer):
    """A transformers `CLIPModel` (64 wide, one layer per tower, 224 px images in 32 px patches) whose text and image
    embeddings are the chroma of the prompt's word colours and of the image's mean colour."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                         num_hidden_layers=1, num_attention_heads=1, max_position_embeddings=77,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1,
                           num_attention_heads=1, image_size=IMAGE_SIZE, patch_size=PATCH),
        projection_dim=HIDDEN,
    )
    model = CLIPModel(config).eval()
    for p in model.parameters():
        p.zero_()
    _layer_norms_identity(model)
    sigma = ANCHOR * (2 / HIDDEN) ** 0.5  # what a LayerNorm of the embeddings divides by

    text = model.text_model
    for word, colour in WORD_COLOURS.items():
        (token,) = tokenizer(word, add_special_tokens=False)["input_ids"]  # every word is one token (tested)
        text.embeddings.token_embedding.weight[token, _COLOUR:_COLOUR + 3] = torch.tensor(colour)
    text.embeddings.position_embedding.weight[:, _ANCHOR:] = torch.tensor([ANCHOR, -ANCHOR])
    _averaging_layer(text.encoder.layers[0], sigma)

    vision = model.vision_model
    for c in range(3):  # each patch's mean of the normalised pixels, x std: its mean colour minus CLIP's mean
        vision.embeddings.patch_embedding.weight[_COLOUR + c, c] = CLIP_STD[c] / PATCH**2
    positions = vision.embeddings.position_embedding.weight  # [1 + patches, D]; row 0 is the class token
    positions[:, _ANCHOR:] = torch.tensor([ANCHOR, -ANCHOR])
    positions[1:, _COLOUR:_COLOUR + 3] = torch.tensor(CLIP_MEAN)  # ... plus CLIP's mean: the patch's mean colour
    _averaging_layer(vision.encoder.layers[0], 1.0)  # after pre_layrnorm the stream is already divided by sigma
    _chroma_projection(model.text_projection)
    _chroma_projection(model.visual_projection)
    return model


def write_demo_retrieval_clip(folder: str | Path, clip_tokenizer: str | Path) -> None:
    """`handset_clip` as a Hugging Face model folder (config, safetensors, tokenizer, preprocessor), written whole
    or not at all."""
    from transformers import AutoTokenizer

    from ..text.images import clip_image_processor_class

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(clip_tokenizer), local_files_only=True)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    handset_clip(tokenizer).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    clip_image_processor_class()(size={"shortest_edge": IMAGE_SIZE},
                                 crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # the folder appears complete or not at all
