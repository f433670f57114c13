"""Native patch nodes on our MODEL against ComfyUI's own HunyuanVideo-I2V built from the same weights, in-process on
the real upstream ComfyUI (issue 31): EasyCache, Skip Layer Guidance DiT, TorchCompileModel (the `aot_eager` backend:
it runs on a CPU), Context Windows (Manual), a block replacement and an attention override written here. Each node,
put on both models the same way and sampled by native KSampler, gives the same latent within 1e-4, and a latent
different from the unpatched run. A patch our DiT cannot apply, and sampler-level patches on our own sampler, are
refused by name."""

from __future__ import annotations

import pytest
import torch
from conftest import make_text, run_node
from test_native import NATIVE_TINY

from magic141_core import save_dit, tiny
from magic141_core.dit.loading import random_dit

NAME = "patches_tiny_i2v.safetensors"
SHAPE = (1, 16, 5, 4, 6)  # 17 frames of 48 x 32 pixels: 5 latent frames, room for context windows of 3
SEED, STEPS = 7, 4


@pytest.fixture(scope="module")
def models(pack, comfy_base):
    """(ours, theirs): Magic141 Model Loader and Load Diffusion Model on the same 2 + 2 block weights, both at
    shift 5 (ModelSamplingSD3; ComfyUI's HunyuanVideo default is 7)."""
    import comfy_extras.nodes_model_advanced as advanced
    import nodes

    save_dit(random_dit(tiny(**NATIVE_TINY, double_blocks=2, single_blocks=2), seed=41),
             comfy_base / "models" / "diffusion_models" / NAME)
    ours = run_node(pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"], model_name=NAME, weight_dtype="fp32")[0]
    theirs = nodes.UNETLoader().load_unet(NAME, "default")[0]
    assert type(theirs.model).__name__ == "HunyuanVideoI2V"
    return tuple(advanced.ModelSamplingSD3().patch(m, 5.0)[0] for m in (ours, theirs))


@pytest.fixture(scope="module")
def conditioning():
    """Native positive / negative as HunyuanImageToVideo v1 sets them (no text padding: ComfyUI's token refiner
    averages over padding, ours does not)."""
    g = torch.Generator().manual_seed(3)
    start = torch.randn(1, 16, 1, *SHAPE[-2:], generator=g)
    mask = torch.ones(1, 1, SHAPE[2], *SHAPE[-2:])
    mask[:, :, :1] = 0
    texts = make_text(length=7, dim=32, pooled_dim=768, seed=4), make_text(length=5, dim=32, pooled_dim=768, seed=5)
    return [[[t.tokens, {"pooled_output": t.pooled, "concat_latent_image": start, "concat_mask": mask}]]
            for t in texts]


def sample(model, conditioning, cfg=1.0, steps=STEPS):
    import nodes

    latent = {"samples": torch.zeros(SHAPE)}
    return nodes.KSampler().sample(model, SEED, steps, cfg, "euler", "simple", *conditioning, latent)[0]["samples"]


PLAIN = {}  # (cfg, steps) -> our unpatched latent, sampled once


def compare(models, conditioning, patch, cfg=1.0, steps=STEPS):
    """Latents of (ours patched, theirs patched, ours unpatched); asserts ours = theirs within 1e-4."""
    ours, theirs = models
    got, expected = (sample(patch(m), conditioning, cfg, steps) for m in (ours, theirs))
    if (cfg, steps) not in PLAIN:
        PLAIN[cfg, steps] = sample(ours, conditioning, cfg, steps)
    plain = PLAIN[cfg, steps]
    assert torch.isfinite(got).all() and expected.abs().max() > 0.1
    assert (got - expected).abs().max() <= 1e-4
    return got, expected, plain


def node_output(out):
    return out.args[0] if hasattr(out, "args") else out[0]


@pytest.mark.compat
def test_easycache(models, conditioning):
    from comfy_extras.nodes_easycache import EasyCacheNode

    got, _, plain = compare(models, conditioning, lambda m: node_output(EasyCacheNode.execute(m, 3.0, 0.0, 1.0,
                                                                                                False)), steps=6)
    assert (got - plain).abs().max() > 1e-3  # steps were reused from the cache


def test_skip_layer_guidance_dit(models, conditioning):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

    got, _, plain = compare(models, conditioning, lambda m: node_output(
        SkipLayerGuidanceDiT.execute(m, 3.0, 0.0, 1.0, double_layers="1", single_layers="0")), cfg=2.0)
    assert (got - plain).abs().max() > 1e-3


def test_torch_compile_model(models, conditioning):
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    compiled = []

    def backend(gm, example_inputs):  # aot_eager, counting the graphs it is handed
        from torch._dynamo.backends.debugging import aot_eager

        compiled.append(gm)
        return aot_eager(gm, example_inputs)

    got, expected, plain = compare(models, conditioning, lambda m: node_output(TorchCompileModel.execute(m, backend)))
    assert compiled  # the compiled module ran (a compiled forward equals the plain one: no difference expected)
    assert (got - plain).abs().max() <= 1e-4


def test_context_windows_manual(models, conditioning):
    from comfy.context_windows import ContextFuseMethods, ContextSchedules
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    def windows(m):  # windows of 3 latent frames overlapping by 1, the start image kept in each
        return node_output(ContextWindowsManualNode.execute(m, 3, 1, ContextSchedules.STATIC_STANDARD, 1, False,
                                                            ContextFuseMethods.PYRAMID, 2, False,
                                                            cond_retain_index_list="0"))

    got, _, plain = compare(models, conditioning, windows)
    assert (got - plain).abs().max() > 1e-3


def test_a_block_replacement_sees_the_same_blocks_and_img_slice(models, conditioning):
    """A patches_replace['dit'] function on double block 1 and single block 0 that calls the original block and
    scales the video tokens it returns (in the single block: the slice `img_slice` names). Both models call it on
    the same blocks with the same block options (ComfyUI 0.30's `img_slice`; 0.3.75 does not set it)."""
    seen = {}

    def patch(model):
        import comfy.model_patcher

        calls = seen.setdefault(id(model), [])

        def replace(args, extra):
            options = args["transformer_options"]
            calls.append((options["block_type"], options["block_index"], options["total_blocks"]))
            out = extra["original_block"](args)
            if options["block_type"] == "double":
                out["img"] = out["img"] * 0.8
            else:
                start, end = options["img_slice"]
                out["img"][:, start:end] *= 0.8
            return out

        m = model.clone()
        for kind, index in (("double_block", 1), ("single_block", 0)):
            m.model_options = comfy.model_patcher.set_model_options_patch_replace(m.model_options, replace, "dit",
                                                                                  kind, index)
        return m

    got, _, plain = compare(models, conditioning, patch)
    assert (got - plain).abs().max() > 1e-3
    ours, theirs = (seen[id(m)] for m in models)
    assert ours == theirs and ours[:2] == [("double", 1, 2), ("single", 0, 2)]


@pytest.mark.compat
def test_an_attention_override(models, conditioning):
    """optimized_attention_override (ComfyUI's attention entry point) sharpening every attention by 1.5: called for
    the same attentions (token refiner, double and single blocks) in the same order on both models."""
    seen = {}

    def patch(model):
        calls = seen.setdefault(id(model), [])

        def override(func, q, k, v, *args, **kwargs):
            options = kwargs["transformer_options"]
            calls.append((options.get("block_type"), options.get("block_index")))
            return func(q * 1.5, k, v, *args, **kwargs)

        m = model.clone()
        m.model_options["transformer_options"]["optimized_attention_override"] = override
        return m

    got, _, plain = compare(models, conditioning, patch)
    assert (got - plain).abs().max() > 1e-3
    ours, theirs = (seen[id(m)] for m in models)
    assert ours == theirs and ours[:4] == [(None, None), (None, None), ("double", 0), ("double", 1)]


@pytest.mark.compat
def test_patches_our_dit_cannot_apply_are_refused_by_name(models, conditioning):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

    ours = models[0]
    slg = node_output(SkipLayerGuidanceDiT.execute(ours, 3.0, 0.0, 1.0, double_layers="7", single_layers=""))
    with pytest.raises(ValueError, match=r"skip from SkipLayerGuidanceDiT \(comfy_extras.nodes_slg\) replaces "
                                         r"transformer block \('double_block', 7\), which this model does not have: "
                                         "it has 2 double"):
        sample(slg, conditioning, cfg=2.0)

    def q_patch(q, k, v, pe=None, attn_mask=None, extra_options=None):
        return {"q": q}

    m = ours.clone()
    m.set_model_attn1_patch(q_patch)
    with pytest.raises(ValueError, match=r"q_patch from test_patches_our_dit_cannot_apply_are_refused_by_name "
                                         r"\(test_native_patches\) adds a 'attn1_patch' patch, which this transformer "
                                         r"cannot apply \(it edits q, k and ComfyUI's own RoPE tensor"):
        sample(m, conditioning)


@pytest.mark.compat
def test_magic141_sampler_refuses_sampler_level_patches_and_runs_per_forward_ones(pack, models, conditioning):
    from comfy_extras.nodes_easycache import EasyCacheNode

    ours = models[0]
    positive = conditioning[0]
    run = dict(latent={"samples": torch.zeros(SHAPE)}, steps=STEPS, shift=5.0, guidance=1.0, seed=SEED)
    sampler = pack.NODE_CLASS_MAPPINGS["Magic141Sampler"]
    cached = node_output(EasyCacheNode.execute(ours, 3.0, 0.0, 1.0, False))
    with pytest.raises(ValueError, match="Magic141 Sampler runs its own sampling loop, but the MODEL carries a "
                                         "'outer_sample' wrapper 'easycache' from easycache_sample_wrapper"):
        run_node(sampler, model=cached, conditioning=positive, **run)
    m = ours.clone()
    m.model_options["transformer_options"]["optimized_attention_override"] = (
        lambda func, q, *args, **kwargs: func(q * 1.5, *args, **kwargs))
    got, plain = (run_node(sampler, model=x, conditioning=positive, **run)[0]["samples"] for x in (m, ours))
    assert (got - plain).abs().max() > 1e-3  # the override reached Magic141 Sampler's forwards
