"""The fixed texts and token arithmetic of Magic141's three encoders (no model code here).

- LLM: the prompt goes into HunyuanVideo's video template, is tokenized to crop + 256 tokens (right-padded,
  truncated), `hidden_states[-3]` is taken (no final norm) and the template's first `crop` tokens are cut off
  (HunyuanVideo `constants.py` PROMPT_TEMPLATE["dit-llm-encode-video"], crop_start 95; Magic141
  `lightning/magic_141_t2v.py` builds its LLM encoder with it, max_length = 256 + crop_start,
  hidden_state_skip_layer=2, apply_final_norm False).
- CLIP-L: the bare prompt, 77 tokens, pooled output.
- VLM: LLaVA sees the reference image under a fixed "describe the video" template whose user turn is `<image>`
  (Magic141 `text_encoder_vlm.py` LLAVA_LLAMA_3_8B_HUMAN_IMAGE_PROMPT). From the last (normed) hidden layer it keeps
  what follows the user header: every 4th of the image features ("::4") and the segment's other tokens.

The other families' templates (`TEMPLATES`): HunyuanVideo-I2V runs ONE LLaVA pass over its I2V template with the
image inside the system turn and the prompt in the user turn, takes `hidden_states[-3]`, keeps every n-th image
feature (`image_embed_interleave`: 2 for v1, 4 for v2) and the prompt's tokens (the assistant header cut out), image
first (diffusers `pipeline_hunyuan_video_image2video.py`, the official HunyuanVideo-I2V text encoder; crop 103);
SkyReels-V1 reads the LLM tokens of the text template alone (diffusers' `HunyuanVideoPipeline` template, as its
pipeline does).
"""

from __future__ import annotations

import torch

# HunyuanVideo's video template for the LLM text encoder; `{}` is the user's prompt.
LLM_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Describe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
LLM_MAX_PROMPT_TOKENS = 256  # tokens kept after the crop
LLM_SKIP_LAYERS = 2  # hidden_states[-(2 + 1)]: the output of the third-from-last layer, before any final norm

CLIP_MAX_LENGTH = 77

# HunyuanVideo-I2V's template (the official `dit-llm-encode-video-i2v`, diffusers' DEFAULT_PROMPT_TEMPLATE of its I2V
# pipeline, ComfyUI's PROMPT_TEMPLATE_ENCODE_VIDEO_I2V): the image in the system turn, `{}` the prompt.
I2V_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing the following aspects "
    "according to the reference image: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
I2V_ASSISTANT_TOKENS = 4  # <|eot_id|> <|start_header_id|> assistant <|end_header_id|>: cut before the last "\n\n"
END_HEADER = "<|end_header_id|>"

# The prompt templates a conditioning can be encoded with -> what the nodes and messages call them.
TEMPLATES = {
    "magic141": "Magic141 (146 image tokens, then the text)",
    "hunyuan_i2v": "HunyuanVideo-I2V (image tokens interleaved, one LLaVA pass)",
    "hunyuan_text": "HunyuanVideo text only (SkyReels-V1)",
}
DEFAULT_INTERLEAVE = 2  # without a model to follow: ComfyUI's TextEncodeHunyuanVideo_ImageToVideo default

# Magic141's VLM template: the longer "describe the video" system text; the user turn is only the image.
VLM_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Describe the video by detailing the following aspects: "
    "1. The central subject and overarching message or purpose of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial arrangement of objects within the scene."
    "3. Actions, events, behaviors, temporal sequences, and physical movements or transformations of objects."
    "4. Behavior, facial expressions, emotions, speaking style, eye gaze, head orientation, body orientation, "
    "gestures (hand and body), and changes in these elements for the main character."
    "5. The background setting, lighting, artistic style, and overall mood or tone of the scene."
    "6. Camera angles, movements, transitions, and other filming techniques employed in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n<image><|eot_id|>"
)
VLM_USER_HEADER = "<|start_header_id|>user<|end_header_id|>"
IMAGE_TOKEN = "<image>"
VLM_IMAGE_STRIDE = 4  # the reference's image_token_selection_expr "::4"

# Magic141's negative prompt (`predict_step`), used only when real classifier-free guidance runs.
NEGATIVE_PROMPT = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, bad teeth, "
    "bad eyes, bad limbs, distortion"
)


def llm_crop_start(tokenizer, template: str = LLM_TEMPLATE) -> int:
    """Tokens before the prompt: BOS plus the template up to `{}` (95 with the llava-llama-3 tokenizer; 103 for
    I2V_TEMPLATE, diffusers' and the official constant)."""
    return len(tokenizer(template.split("{}")[0])["input_ids"])


def image_feature_count(vision_config, select_strategy: str = "default") -> int:
    """Image features LLaVA puts in place of one `<image>`: one per patch, plus CLS under the "full" strategy."""
    patches = (vision_config.image_size // vision_config.patch_size) ** 2  # (336 // 14)^2 = 576
    return patches + (1 if select_strategy == "full" else 0)


def expand_image_tokens(ids: list[int], image_token_id: int, n_features: int) -> list[int]:
    """Repeat every image token `n_features` times: the sequence the language model really sees."""
    out = []
    for i in ids:
        out.extend([i] * n_features if i == image_token_id else [i])
    return out


def vlm_keep_positions(
    ids: list[int], header_ids: list[int], image_token_id: int, n_features: int, stride: int = VLM_IMAGE_STRIDE
) -> torch.Tensor:
    """Positions of the VLM tokens Magic141 keeps, in order, from the expanded id sequence `ids`.

    Everything up to and including the (single) user header is dropped; of each image's `n_features` features
    only those at offsets 0, stride, 2*stride, ... are kept; every other token of the user segment is kept.
    For llava-llama-3 (576 features, user segment "\\n\\n" <image> <|eot_id|>) that is 1 + 144 + 1 = 146.
    """
    n = len(header_ids)
    starts = [i for i in range(len(ids) - n + 1) if ids[i : i + n] == header_ids]
    if len(starts) != 1:
        raise ValueError(
            f"the VLM text must contain the user header {VLM_USER_HEADER!r} exactly once, found {len(starts)}; "
            "the tokenizer does not match llava-llama-3 (it needs the Llama-3 header tokens)"
        )
    keep, run = [], 0
    for pos in range(starts[0] + n, len(ids)):
        if ids[pos] == image_token_id:
            if run % n_features % stride == 0:
                keep.append(pos)
            run += 1
        else:
            keep.append(pos)
            run = 0
    return torch.tensor(keep, dtype=torch.long)
