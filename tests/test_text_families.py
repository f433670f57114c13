"""The other families' prompt templates on the tiny LLaVA (`tiny_llava.py`): HunyuanVideo-I2V's (one LLaVA pass with
the image inside, image tokens interleaved) against diffusers' `HunyuanVideoImageToVideoPipeline`, and the text-only
one (SkyReels-V1)."""

from __future__ import annotations

import pytest
import torch

from magic141_core.text.encode import encode_i2v
from magic141_core.text.images import to_rgb_images
from magic141_core.text.prompts import I2V_TEMPLATE, NEGATIVE_PROMPT, llm_crop_start
from tiny_llava import IMAGE_SIZE, PATCH, PROMPTS, build_tiny_encoders, one_thread, random_image  # noqa: F401

pytestmark = pytest.mark.compat  # the encoders run under transformers 5 and 4.5x (scripts/test.sh)
diffusers = pytest.importorskip("diffusers")
FEATURES = (IMAGE_SIZE // PATCH) ** 2  # 36 image features per image in the tiny LLaVA (576 in the real one)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_encoders(tmp_path_factory.mktemp("encoders"))


def diffusers_i2v_text(tiny, prompt: str, image, interleave: int):
    """diffusers' own HunyuanVideo-I2V prompt embedding on the tiny LLaVA: its template with the tiny tokenizer's
    crop and image place (103 and 5..581 for the real tokenizer and LLaVA, which this pack computes the same way)."""
    enc = tiny["enc"]
    tokenizer = enc.llava.tokenizer
    start = tokenizer(I2V_TEMPLATE.split("<image>")[0])["input_ids"].__len__()  # the <image> token's place
    template = {"template": I2V_TEMPLATE, "crop_start": llm_crop_start(tokenizer, I2V_TEMPLATE),
                "image_emb_start": start, "image_emb_end": start + FEATURES, "image_emb_len": FEATURES}
    tiny["llava"].config.pad_token_id = tokenizer.pad_token_id  # read by diffusers (the real config has one)
    pipe = diffusers.HunyuanVideoImageToVideoPipeline(
        text_encoder=tiny["llava"], tokenizer=tokenizer, transformer=None, vae=None, scheduler=None,
        text_encoder_2=None, tokenizer_2=None, image_processor=enc.llava.image_processor)
    with torch.no_grad():
        return pipe._get_llama_prompt_embeds(to_rgb_images(image)[0], prompt, template, device="cpu",
                                             dtype=torch.float32, image_embed_interleave=interleave)


@pytest.mark.parametrize("interleave", [2, 4], ids=["v1", "v2"])
def test_hunyuan_i2v_template_matches_diffusers(tiny, interleave):
    enc, image = tiny["enc"], random_image(3)
    for prompt in (PROMPTS[0], PROMPTS[2]):
        want, want_mask = diffusers_i2v_text(tiny, prompt, image, interleave)
        got, got_mask = encode_i2v(enc.llava.model, enc.llava.tokenizer, enc.llava.image_processor, [prompt],
                                   to_rgb_images(image), interleave)
        assert got.shape == want.shape == (1, FEATURES // interleave + 256 - 4, 256)
        assert torch.equal(got_mask.long(), want_mask.long())
        valid = got_mask[0].bool()  # padding rows differ (diffusers gives them position 1) and are masked out anyway
        torch.testing.assert_close(got[:, valid], want[:, valid], rtol=0, atol=1e-5)
    # two prompts of different lengths in one pass = one by one; the image part comes first
    both, mask = encode_i2v(enc.llava.model, enc.llava.tokenizer, enc.llava.image_processor, PROMPTS[:2],
                            to_rgb_images(torch.cat([image, random_image(4)])), interleave)
    one, _ = encode_i2v(enc.llava.model, enc.llava.tokenizer, enc.llava.image_processor, PROMPTS[1:2],
                        to_rgb_images(random_image(4)), interleave)
    valid = mask[1].bool()
    torch.testing.assert_close(both[1:, valid], one[:, valid], rtol=0, atol=1e-5)
    assert bool(mask[:, : FEATURES // interleave].all()) and mask[0].sum() != mask[1].sum()


def test_encoders_offer_each_template_and_cache_it(tiny):
    enc, image = tiny["enc"], random_image(5)
    i2v = enc.encode(PROMPTS[1], image, negative=True, template="hunyuan_i2v", image_interleave=4)
    assert i2v.template == "hunyuan_i2v"
    tokens, mask = encode_i2v(enc.llava.model, enc.llava.tokenizer, enc.llava.image_processor, [PROMPTS[1]],
                              to_rgb_images(image), 4)
    assert torch.equal(i2v.positive.tokens, tokens) and torch.equal(i2v.positive.mask, mask.long())
    black = torch.zeros_like(image)  # diffusers encodes the negative prompt with a black image
    neg, _ = encode_i2v(enc.llava.model, enc.llava.tokenizer, enc.llava.image_processor, [NEGATIVE_PROMPT],
                        to_rgb_images(black), 4)
    assert torch.equal(i2v.negative.tokens, neg)
    text = enc.encode(PROMPTS[1], image, template="hunyuan_text")
    llm, llm_mask, pooled = enc.encode_text(PROMPTS[1])
    assert text.template == "hunyuan_text" and torch.equal(text.positive.tokens, llm)
    assert torch.equal(text.positive.mask, llm_mask) and torch.equal(i2v.positive.pooled, pooled)
    calls = []
    enc.llava.model.register_forward_hook(lambda *_: calls.append(1))
    again = enc.encode(PROMPTS[1], image, template="hunyuan_i2v", image_interleave=4)
    assert not calls and torch.equal(again.positive.tokens, i2v.positive.tokens)  # answered from the cache
    with pytest.raises(ValueError, match="unknown prompt template 'x'"):
        enc.encode(PROMPTS[1], image, template="x")
