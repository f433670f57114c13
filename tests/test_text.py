"""The text and image encoders on tiny random LLaVA (Llama + CLIP vision) and CLIP text models (`tiny_llava.py`),
saved in Hugging Face layout and as ComfyUI's single files, then loaded back through our loaders."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from magic141_core.weights import CheckpointError
from magic141_core.text import Magic141Encoders, load_llava
from magic141_core.text.comfy_keys import clip_key, llava_key
from magic141_core.text.encode import encode_clip, encode_llm, encode_vlm, tokenize_llm, vlm_input_ids
from magic141_core.text.images import pixel_values, to_rgb_images
from magic141_core.text.prompts import (
    LLM_TEMPLATE,
    NEGATIVE_PROMPT,
    VLM_TEMPLATE,
    VLM_USER_HEADER,
    expand_image_tokens,
    image_feature_count,
    llm_crop_start,
    vlm_keep_positions,
)
from magic141_core.text.sources import ClipSource, LlavaSource
from tiny_llava import IMAGE_SIZE, LAYERS, PROMPTS, build_tiny_encoders, one_thread, random_image  # noqa: F401

pytestmark = pytest.mark.compat  # the encoders run under transformers 5 and 4.5x (scripts/test.sh)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_encoders(tmp_path_factory.mktemp("encoders"))


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


# ------------------------------------------------------------------------------------------ token arithmetic
def test_real_llava_llama3_sequence_keeps_146_vlm_tokens_in_order():
    """The real ids (header 128006 882 128007, "\\n\\n" 271, <image> 128257, <|eot_id|> 128009; CLIP ViT-L/14-336)."""
    from transformers import CLIPVisionConfig

    n_features = image_feature_count(CLIPVisionConfig(image_size=336, patch_size=14), "default")
    assert n_features == 576
    ids = [128000, 128006, 9125, 128007] + [1000] * 144 + [128006, 882, 128007, 271, 128257, 128009]
    expanded = expand_image_tokens(ids, 128257, n_features)
    assert len(expanded) == len(ids) - 1 + 576
    keep = vlm_keep_positions(expanded, [128006, 882, 128007], 128257, n_features).tolist()
    user = 148 + 3  # first position after the user header
    assert len(keep) == 146 == 1 + 576 // 4 + 1
    assert keep == [user] + [user + 1 + 4 * i for i in range(144)] + [user + 1 + 576]
    assert [expanded[p] for p in keep] == [271] + [128257] * 144 + [128009]
    with pytest.raises(ValueError, match="exactly once"):
        vlm_keep_positions(expanded + [128006, 882, 128007], [128006, 882, 128007], 128257, n_features)


def test_crop_leaves_exactly_the_prompt_tokens(tiny):
    tok = tiny["enc"].llava.tokenizer
    ids, mask, crop = tokenize_llm(tok, PROMPTS)
    prefix = tok(LLM_TEMPLATE.split("{}")[0])["input_ids"]
    assert crop == len(prefix) == llm_crop_start(tok) and ids.shape == mask.shape == (3, crop + 256)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    for i, p in enumerate(PROMPTS):
        assert ids[i, :crop].tolist() == prefix
        kept = ids[i, crop:][mask[i, crop:].bool()].tolist()
        assert kept == tok(p, add_special_tokens=False)["input_ids"] + [eot]
        assert (ids[i, crop + len(kept):] == tok.pad_token_id).all()


# ------------------------------------------------------------------------------------------ hidden states
def test_llm_tokens_are_the_third_from_last_layer_without_final_norm(tiny):
    enc = tiny["enc"]
    lm = enc.llava.model.language_model
    ids, mask, crop = tokenize_llm(enc.llava.tokenizer, PROMPTS[:1])
    captured = []
    hook = lm.layers[LAYERS - 3].register_forward_hook(lambda m, i, o: captured.append(_first(o)))
    try:
        with torch.no_grad():
            lm(input_ids=ids, attention_mask=mask)
    finally:
        hook.remove()
    expected = captured[0][:, crop:]  # [1, 256, C]: the layer's own output, no norm
    tokens, out_mask, _ = enc.encode_text(PROMPTS[0])
    torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-5)
    assert torch.equal(out_mask, mask[:, crop:])
    assert not torch.allclose(tokens, lm.norm(expected), atol=1e-3)  # the final norm is not applied


def test_clip_pooled_is_the_normed_hidden_state_at_the_end_token(tiny):
    enc = tiny["enc"]
    tok, model = enc.clip.tokenizer, enc.clip.model
    batch = tok(PROMPTS, max_length=77, padding="max_length", truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape == (3, 77)
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    eos = (batch["input_ids"] == tok.eos_token_id).int().argmax(-1)
    expected = hidden[torch.arange(3), eos]
    torch.testing.assert_close(encode_clip(model, tok, PROMPTS), expected, rtol=0, atol=1e-6)
    assert enc.encode_text(PROMPTS)[2].shape == (3, 64)


def test_vlm_tokens_are_every_4th_image_feature_and_the_user_segment_of_the_last_normed_layer(tiny):
    enc = tiny["enc"]
    model, tok = enc.llava.model, enc.llava.tokenizer
    image_id = model.config.image_token_index
    ids = tok(VLM_TEMPLATE)["input_ids"]
    header = tok(VLM_USER_HEADER, add_special_tokens=False)["input_ids"]
    user = next(i for i in range(len(ids)) if ids[i:i + len(header)] == header) + len(header)
    at = ids.index(image_id)
    expanded = ids[:at] + [image_id] * 36 + ids[at + 1:]
    assert vlm_input_ids(tok, image_id, 36)[0] == expanded
    image = random_image(3)
    px = pixel_values(enc.llava.image_processor, to_rgb_images(image))
    captured = []
    hook = model.language_model.layers[-1].register_forward_hook(lambda m, i, o: captured.append(_first(o)))
    try:
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([expanded]), pixel_values=px).last_hidden_state[0]
    finally:
        hook.remove()
    torch.testing.assert_close(hidden, model.language_model.norm(captured[0])[0])  # the last layer, normed
    before, after = list(range(user, at)), list(range(at + 36, len(expanded)))
    expected = torch.cat([hidden[before], hidden[at:at + 36:4], hidden[after]])
    got = enc.encode_image(image)
    assert got.shape == (1, len(before) + 9 + len(after), 256)
    torch.testing.assert_close(got[0], expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ the joint sequence
def test_joint_sequence_mask_and_negative_share_the_image_tokens(tiny):
    enc = tiny["enc"]
    image = random_image(4)
    cond = enc.encode(PROMPTS[1], image, negative=True)
    img = enc.encode_image(image)
    txt, txt_mask, pooled = enc.encode_text(PROMPTS[1])
    n = img.shape[1]
    pos = cond.positive
    assert pos.tokens.shape == (1, n + 256, 256) and pos.mask.shape == (1, n + 256)
    assert torch.equal(pos.tokens[:, :n], img) and torch.equal(pos.tokens[:, n:], txt)
    assert torch.equal(pos.mask, torch.cat([torch.ones(1, n, dtype=torch.long), txt_mask], 1))
    assert pos.mask[0, n:].sum() == len(enc.llava.tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"]) + 1
    assert torch.equal(pos.pooled, pooled) and pos.tokens.dtype == torch.float32
    neg_txt, neg_mask, neg_pooled = enc.encode_text(NEGATIVE_PROMPT)
    assert torch.equal(cond.negative.tokens, torch.cat([img, neg_txt], 1))
    assert torch.equal(cond.negative.mask[:, n:], neg_mask) and torch.equal(cond.negative.pooled, neg_pooled)
    assert enc.encode(PROMPTS[1], image).negative is None
    two = enc.encode([PROMPTS[1], PROMPTS[0]], torch.cat([image, random_image(5)]))  # prompt i with image i
    assert torch.equal(two.positive.tokens[0], pos.tokens[0]) and not torch.equal(two.positive.tokens[1, :n], img[0])
    with pytest.raises(ValueError, match="2 prompts and 3 images"):
        enc.encode(PROMPTS[:2], torch.cat([image] * 3))


def test_batch_with_padding_equals_one_by_one(tiny):
    enc = tiny["enc"]
    lm, tok = enc.llava.model.language_model, enc.llava.tokenizer
    tokens, mask = encode_llm(lm, tok, PROMPTS)
    pooled = encode_clip(enc.clip.model, enc.clip.tokenizer, PROMPTS)
    assert len({int(m.sum()) for m in mask}) == 3  # three different lengths, so padding differs
    for i, p in enumerate(PROMPTS):
        t1, m1 = encode_llm(lm, tok, [p])
        torch.testing.assert_close(tokens[i:i + 1], t1, rtol=0, atol=1e-5)
        assert torch.equal(mask[i:i + 1], m1)
        torch.testing.assert_close(pooled[i:i + 1], encode_clip(enc.clip.model, enc.clip.tokenizer, [p]),
                                   rtol=0, atol=1e-5)
    images = to_rgb_images([random_image(6), random_image(7, 50, 40)])
    both = encode_vlm(enc.llava.model, tok, enc.llava.image_processor, images)
    for i, im in enumerate(images):
        torch.testing.assert_close(both[i:i + 1], encode_vlm(enc.llava.model, tok, enc.llava.image_processor, [im]),
                                   rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ cache
def test_cache_returns_identical_tensors_without_running_or_loading_models(tiny, tmp_path):
    cache = tmp_path / "cache"
    enc = Magic141Encoders.from_folders(tiny["llava_dir"], tiny["clip_dir"], device="cpu", dtype=torch.float32,
                                        cache_dir=cache).load()
    llm_calls, vlm_calls = _count_calls(enc.llava.model.language_model), _count_calls(enc.llava.model.vision_tower)
    clip_calls = _count_calls(enc.clip.model)
    image = random_image(8)
    first = enc.encode(PROMPTS[0], image, negative=True)
    assert (len(llm_calls), len(vlm_calls), len(clip_calls)) == (2, 1, 1)  # VLM; prompt + negative in one batch
    again = enc.encode(PROMPTS[0], image, negative=True)
    assert (len(llm_calls), len(vlm_calls), len(clip_calls)) == (2, 1, 1)
    assert len(list(cache.glob("*.safetensors"))) == 3 and not list(cache.glob(".*partial*"))
    fresh = Magic141Encoders.from_folders(tiny["llava_dir"], tiny["clip_dir"], device="cpu", dtype=torch.float32,
                                          cache_dir=cache)
    from_disk = fresh.encode(PROMPTS[0], image, negative=True)
    assert not fresh.loaded  # answered from disk: nothing was loaded
    for cond in (again, from_disk):
        for a, b in ((first.positive, cond.positive), (first.negative, cond.negative)):
            assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask) and torch.equal(a.pooled, b.pooled)
    other = Magic141Encoders.from_folders(tiny["llava_dir"], tiny["clip_dir"], device="cpu", dtype=torch.bfloat16,
                                          cache_dir=cache)
    assert other.identity != fresh.identity  # another dtype is another encoder


def test_encoders_go_to_the_device_for_an_encode_and_back_to_the_cpu_once(tiny, monkeypatch):
    enc = Magic141Encoders.from_folders(tiny["llava_dir"], tiny["clip_dir"], device="cuda", dtype=torch.float32)
    moves = []
    monkeypatch.setattr(enc, "offload", lambda device="cpu": moves.append(str(device)))  # record, keep on the CPU
    enc.encode(PROMPTS[0], random_image(13), negative=True)
    assert moves == ["cuda", "cuda", "cpu"]  # VLM, then LLM + CLIP; one offload at the end
    moves.clear()
    enc.offload_after_encode = False
    enc.encode(PROMPTS[1], random_image(13))
    assert moves == ["cuda"]


def test_cache_is_not_fooled_by_a_different_image_with_the_same_file_name(tiny, tmp_path):
    enc = Magic141Encoders.from_folders(tiny["llava_dir"], tiny["clip_dir"], device="cpu", dtype=torch.float32,
                                        cache_dir=tmp_path / "cache").load()
    path = tmp_path / "reference.png"
    a, b = (Image.fromarray((random_image(s)[0].numpy() * 255).round().astype(np.uint8)) for s in (9, 10))
    a.save(path)
    tokens_a = enc.encode(PROMPTS[0], Image.open(path)).positive.tokens
    b.save(path)  # same name, new picture
    tokens_b = enc.encode(PROMPTS[0], Image.open(path)).positive.tokens
    assert not torch.allclose(tokens_a, tokens_b)
    uncached = encode_vlm(enc.llava.model, enc.llava.tokenizer, enc.llava.image_processor, [b])
    torch.testing.assert_close(tokens_b[:, :uncached.shape[1]], uncached, rtol=0, atol=1e-5)
    same_as_tensor = enc.encode_image(torch.from_numpy(np.array(b)).float()[None] / 255)
    assert torch.equal(same_as_tensor, tokens_b[:, :uncached.shape[1]])  # PIL and IMAGE tensor hash alike


# ------------------------------------------------------------------------------------------ ComfyUI files
def test_comfyui_key_names_map_onto_transformers_modules():
    assert llava_key("model.layers.0.self_attn.q_proj.weight") == "language_model.layers.0.self_attn.q_proj.weight"
    assert llava_key("model.embed_tokens.weight") == "language_model.embed_tokens.weight"
    assert llava_key("model.norm.weight") == "language_model.norm.weight"
    assert llava_key("vision_model.pre_layrnorm.weight") == "vision_tower.vision_model.pre_layrnorm.weight"
    fc1 = "vision_model.encoder.layers.3.mlp.fc1.bias"
    assert llava_key(fc1) == "vision_tower." + fc1
    assert llava_key("multi_modal_projector.linear_2.weight") == "multi_modal_projector.linear_2.weight"
    for dropped in ("lm_head.weight", "visual_projection.weight"):  # fp8 scales: hidden by weights.fp8
        assert llava_key(dropped) is None
    assert clip_key("text_model.final_layer_norm.weight") == "text_model.final_layer_norm.weight"
    assert clip_key("text_projection.weight") is None and clip_key("logit_scale") is None
    with pytest.raises(KeyError):
        llava_key("double_blocks.0.img_attn_qkv.weight")


def test_comfyui_single_files_give_the_same_embeddings_as_the_folders(tiny):
    f = tiny["files"]
    comfy = Magic141Encoders.from_comfyui_files(f["llava_llama3_fp16"], f["llava_llama3_vision"], f["clip_l"],
                                                tiny["llama_tok_dir"], tiny["clip_tok_dir"], device="cpu",
                                                dtype=torch.float32)
    image = random_image(11)
    a, b = comfy.encode(PROMPTS[2], image).positive, tiny["enc"].encode(PROMPTS[2], image).positive
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=1e-5)
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.pooled, b.pooled, rtol=0, atol=1e-5)
    assert comfy.llava.model.config.vision_config.image_size == IMAGE_SIZE
    with pytest.raises(CheckpointError, match="CLIP text encoder"):
        load_llava(LlavaSource(text_encoder=f["clip_l"], vision=f["llava_llama3_vision"],
                               tokenizer=tiny["llama_tok_dir"]), torch.float32)


def test_fp8_scaled_text_encoder_is_dequantised_to_the_requested_dtype(tiny):
    from safetensors import safe_open

    f = tiny["files"]
    for dtype in (torch.float32, torch.bfloat16):
        parts = load_llava(LlavaSource(text_encoder=f["llava_llama3_fp8_scaled"], vision=f["llava_llama3_vision"],
                                       tokenizer=tiny["llama_tok_dir"]), dtype)
        q = parts.model.language_model.layers[1].self_attn.q_proj.weight
        with safe_open(str(f["llava_llama3_fp8_scaled"]), "pt") as sf:
            w8 = sf.get_tensor("model.layers.1.self_attn.q_proj.weight")
            scale = sf.get_tensor("model.layers.1.self_attn.q_proj.scale_weight")
        assert q.dtype == dtype and w8.dtype == torch.float8_e4m3fn
        assert torch.equal(q, (w8.float() * scale).to(dtype))
        original = tiny["llava"].model.language_model.layers[1].self_attn.q_proj.weight
        torch.testing.assert_close(q.float(), original, rtol=0.07, atol=scale.item())


# ------------------------------------------------------------------------------------------ bad input
def test_missing_or_incomplete_model_folders_name_the_files_and_where_they_go(tiny, tmp_path):
    broken = tmp_path / "llava"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    (broken / "model-00001-of-00002.safetensors").write_bytes(b"x")
    with pytest.raises(FileNotFoundError) as e:
        Magic141Encoders.from_folders(broken, tiny["clip_dir"])
    msg = str(e.value)
    assert "model-00002-of-00002.safetensors" in msg and "tokenizer.json" in msg
    assert "model-00001-of-00002" not in msg.split("missing:")[1].split("\n")[0]
    assert "ComfyUI/models/text_encoders/llava-llama-3-8b-v1_1-transformers/" in msg
    with pytest.raises(FileNotFoundError) as e:  # both encoders' problems in one message
        Magic141Encoders.from_folders(broken, tmp_path / "nowhere")
    msg = str(e.value)
    assert "tokenizer.json" in msg and f"the CLIP-L folder at {tmp_path / 'nowhere'} is missing" in msg
    with pytest.raises(FileNotFoundError, match="the CLIP-L folder at .*nowhere is missing"):
        ClipSource(folder=tmp_path / "nowhere").check()
    f = tiny["files"]
    with pytest.raises(FileNotFoundError) as e:
        Magic141Encoders.from_comfyui_files(f["llava_llama3_fp16"], tmp_path / "llava_llama3_vision.safetensors",
                                            f["clip_l"], tiny["llama_tok_dir"], None)
    llava_line, clip_line = str(e.value).splitlines()[:2]
    assert "the LLaVA vision file" in llava_line and "ComfyUI/models/clip_vision/llava_llama3_vision" in llava_line
    assert "text encoder file" not in llava_line  # the file that is there is not reported
    assert "ComfyUI/comfy/sd1_tokenizer/" in clip_line and "clip_l.safetensors" not in clip_line


def test_prompt_over_256_tokens_is_truncated_with_a_warning(tiny, caplog):
    enc = tiny["enc"]
    tok = enc.llava.tokenizer
    long_prompt = " ".join(["a red car and two dogs"] * 60)
    n = len(tok(long_prompt, add_special_tokens=False)["input_ids"])
    assert n > 256
    with caplog.at_level(logging.WARNING, logger="magic141_core.text"):
        tokens, mask = encode_llm(enc.llava.model.language_model, tok, [long_prompt])
    assert any("truncated" in r.getMessage() and f"is {n} tokens" in r.getMessage() for r in caplog.records)
    assert tokens.shape[1] == 256 and int(mask.sum()) == 256
    ids, _, crop = tokenize_llm(tok, [long_prompt])
    assert ids[0, crop:].tolist() == tok(long_prompt, add_special_tokens=False)["input_ids"][:256]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="magic141_core.text"):
        encode_llm(enc.llava.model.language_model, tok, PROMPTS)
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


def test_alpha_grey_and_odd_sized_images_are_preprocessed_as_the_reference(tiny):
    from transformers import CLIPImageProcessor

    reference = CLIPImageProcessor.from_pretrained(str(tiny["llava_dir"]), local_files_only=True)
    rgba = random_image(12, 333, 517, channels=4)
    pil = Image.fromarray((rgba[0].numpy() * 255).round().astype(np.uint8), "RGBA")
    # The official code ran transformers 4, whose processor dropped alpha (PIL convert("RGB")); transformers 5's
    # composites it on white. The pack drops it before the processor, so both versions give the official pixels.
    expected = reference(images=pil.convert("RGB"), return_tensors="pt")["pixel_values"]
    assert expected.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    proc = tiny["enc"].llava.image_processor
    assert torch.equal(pixel_values(proc, to_rgb_images(pil)), expected)
    assert torch.equal(pixel_values(proc, to_rgb_images(rgba)), expected)  # ComfyUI tensor with alpha
    assert torch.equal(pixel_values(proc, to_rgb_images(rgba[..., :3])), expected)  # alpha is dropped, not blended
    grey = Image.fromarray((rgba[0, ..., 0].numpy() * 255).round().astype(np.uint8), "L")
    assert torch.equal(pixel_values(proc, to_rgb_images(grey)),
                       reference(images=grey, return_tensors="pt")["pixel_values"])
    assert torch.equal(pixel_values(proc, to_rgb_images(rgba[..., :1])), pixel_values(proc, to_rgb_images(grey)))
    assert tiny["enc"].encode_image(pil).shape[0] == 1
    with pytest.raises(ValueError, match="ComfyUI IMAGE"):
        to_rgb_images(torch.rand(3, 64, 64, 2))


def test_the_built_in_llava_preprocessing_is_the_one_llava_llama_3_ships():
    """A LLaVA file without a preprocessor_config.json (ComfyUI's single files) gets `llava_image_processor`. It must
    be what llava-llama-3 ships (openai/clip-vit-large-patch14-336's config): transformers' own CLIP defaults
    (OpenAI's mean and std, bicubic, rescale, centre crop) at 336 px, pixel for pixel."""
    from magic141_core.text.images import clip_image_processor_class, llava_image_processor

    reference = clip_image_processor_class()(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    images = to_rgb_images(random_image(13, 300, 500))
    assert torch.equal(pixel_values(llava_image_processor(336), images), pixel_values(reference, images))


# ------------------------------------------------------------------------------------------ the real tokenizer
def test_real_llava_llama3_tokenizer_crop_is_95_and_vlm_keeps_146():
    """ComfyUI ships the real llava-llama-3 tokenizer (a required part of the test host: a missing one fails)."""
    from comfyui_env import COMFYUI, require_host

    from magic141_core.text.loading import load_tokenizer

    require_host()
    tok = load_tokenizer(COMFYUI / "comfy" / "text_encoders" / "llama_tokenizer")
    assert llm_crop_start(tok) == 95  # the reference's crop_start
    ids, keep = vlm_input_ids(tok, tok.convert_tokens_to_ids("<image>"), 576)
    assert len(ids) == 729 and len(keep) == 146
    assert tok.convert_ids_to_tokens([ids[keep[0]], ids[keep[-1]]]) == ["ĊĊ", "<|eot_id|>"]
