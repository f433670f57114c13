"""Magic141's text and image encoders: LLM text tokens, CLIP-L pooled vector and VLM image tokens.

`Magic141Encoders.encode(prompt, image)` returns the `Conditioning` the sampler consumes. The recipe (templates,
crop, hidden layer, image-token selection) is in `prompts.py`; file layouts in `sources.py` and docs/encoders.md.
"""

from .cache import EmbeddingCache
from .encoders import Magic141Encoders, TemplateEncoders
from .loading import ClipParts, LlavaParts, load_clip, load_llava
from .prompts import LLM_TEMPLATE, NEGATIVE_PROMPT, VLM_TEMPLATE
from .sources import WHERE_FILES_GO, ClipSource, LlavaSource

__all__ = [
    "ClipParts",
    "ClipSource",
    "EmbeddingCache",
    "LLM_TEMPLATE",
    "LlavaParts",
    "LlavaSource",
    "Magic141Encoders",
    "TemplateEncoders",
    "NEGATIVE_PROMPT",
    "VLM_TEMPLATE",
    "WHERE_FILES_GO",
    "load_clip",
    "load_llava",
]
