"""Our DiT built from ComfyUI's ops inside ComfyUI (issue 31, points 2 and 3), in-process on the real upstream
ComfyUI: ComfyUI's partial loading (a third of the model on the device, the rest cast per layer at use, a native
LoRA applied at use there) gives the full load's output; int8 loads whole; fp8 files keep fp8 weights (ComfyUI's own
fp8 tensors for scaled fp8), equal the core's fp8 path and take native LoRAs."""

from __future__ import annotations

import pytest
import torch
from conftest import run_node
from test_fp8 import write
from test_lora import NATIVE_TINY, write_lora

from magic141_core import save_dit, tiny
from magic141_core.dit.loading import load_dit, random_dit

SHAPE = (1, 16, 2, 4, 4)


@pytest.fixture(scope="module")
def files(comfy_base):
    import folder_paths

    loras = comfy_base / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    folder_paths.add_model_folder_path("loras", str(loras), is_default=True)
    folder = comfy_base / "models" / "diffusion_models"
    model = random_dit(tiny(**NATIVE_TINY, double_blocks=2, single_blocks=2), seed=51)
    save_dit(model, folder / "ops_tiny.safetensors")
    fp8, _ = write("comfy_scale_weight", model.state_dict(), folder)
    return {"dit": "ops_tiny.safetensors", "fp8": fp8.name, "lora": write_lora(loras, "ops_lora.safetensors",
                                                                               "official", model, seed=52)}


def inputs():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(SHAPE, generator=g)
    concat = torch.cat([torch.randn(1, 16, 1, 4, 4, generator=g), torch.zeros(1, 16, 1, 4, 4)], dim=2)
    mask = torch.zeros(1, 1, 2, 4, 4)
    mask[:, :, :1] = 1.0
    return dict(x=x, t=torch.tensor([0.8]), c_concat=torch.cat([concat, mask], dim=1),
                c_crossattn=torch.randn(1, 7, 32, generator=g), y=torch.randn(1, 768, generator=g))


def forward(patcher, budget: float) -> torch.Tensor:
    """One apply_model after ComfyUI's `partially_load` with `budget` bytes; the patcher is unloaded after."""
    patcher.partially_load(torch.device("cpu"), extra_memory=budget)
    try:
        with torch.no_grad():
            return patcher.model.apply_model(**inputs()).clone()
    finally:
        patcher.detach()


def load(pack, name, **options):
    return run_node(pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"], model_name=name, weight_dtype="fp32",
                    **options)[0]


def lora(patcher, name, strength=0.7):
    import nodes

    return nodes.LoraLoaderModelOnly().load_lora_model_only(patcher, name, strength)[0]


@pytest.mark.compat
def test_our_layers_are_comfyuis_ops_and_a_partial_load_of_a_third_equals_the_full_load(pack, files):
    import comfy.ops

    base = load(pack, files["dit"])
    patcher = lora(base, files["lora"])
    dit = patcher.model.diffusion_model
    assert isinstance(dit.double_blocks[0].img_attn_qkv, comfy.ops.disable_weight_init.Linear)
    assert isinstance(dit.single_blocks[0].q_norm, comfy.ops.disable_weight_init.RMSNorm)
    assert isinstance(dit.img_in.proj, comfy.ops.disable_weight_init.Conv3d)
    full = forward(patcher, 1e30)
    assert not patcher.model.model_lowvram
    size = patcher.model_size()
    patcher.partially_load(torch.device("cpu"), extra_memory=size / 3)
    cast = [n for n, m in dit.named_modules() if getattr(m, "comfy_cast_weights", False)]
    assert patcher.model.model_lowvram and patcher.loaded_size() <= size / 3 and len(cast) > 10
    patcher.detach()
    partial = forward(patcher, size / 3)
    without_lora = forward(base, 1e30)
    assert (full - without_lora).abs().max() > 1e-3  # the LoRA is applied, by merging or at use
    assert (partial - full).abs().max() <= 1e-5 * max(1.0, full.abs().max().item())
    # what ComfyUI calls for a fresh, non-dynamic copy (TorchCompileModel on Dynamic VRAM, multi-GPU): the same model
    import comfy.model_patcher

    factory, args = base.cached_patcher_init
    fresh = factory(*args, disable_dynamic=True)
    assert type(fresh) is comfy.model_patcher.ModelPatcher and torch.equal(forward(fresh, 1e30), without_lora)


@pytest.mark.compat
def test_int8_loads_whole_under_a_partial_budget(pack, files):
    patcher = load(pack, files["dit"], int8="quantize on load")
    full = forward(patcher, 1e30)
    partial = forward(patcher, patcher.model_size() / 3)
    patcher.partially_load(torch.device("cpu"), extra_memory=patcher.model_size() / 3)
    assert not patcher.model.model_lowvram  # quanto layers are not ComfyUI ops: loaded whole, never stranded
    patcher.detach()
    assert torch.equal(partial, full)


def test_scaled_fp8_stays_fp8_as_comfyuis_own_fp8_tensors_and_equals_the_core(pack, files, comfy_base):
    """ComfyUI 0.30's per-layer fp8 format (0.3.75 has none: there scaled layers are dequantized at load)."""
    import comfy.model_management as mm
    import comfy.quant_ops

    patcher = load(pack, files["fp8"])
    dit = patcher.model.diffusion_model
    layer = dit.double_blocks[1].img_mlp.fc1  # ComfyUI's own quantized Linear, as its scaled-fp8 loader makes it
    assert isinstance(layer.weight, comfy.quant_ops.QuantizedTensor) and layer.quant_format == "float8_e4m3fn"
    assert not hasattr(layer, "weight_scale") or not isinstance(getattr(layer, "weight_scale"), torch.Tensor)
    float_bytes = mm.module_size(load(pack, files["dit"]).model) / 2  # as bf16
    assert mm.module_size(patcher.model) <= 0.55 * float_bytes
    core = load_dit(comfy_base / "models" / "diffusion_models" / files["fp8"], dtype=torch.float32)
    mine = forward(patcher, 1e30)
    x = inputs()
    with torch.no_grad():
        ref = core(torch.cat([x["x"], x["c_concat"]], dim=1), x["t"] * 1000, x["c_crossattn"], torch.ones(1, 7),
                   x["y"]).float()
    expected = x["x"] - ref * 0.8  # calculate_denoised of flow matching at sigma 0.8: x - sigma v
    assert (mine - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    with_lora = lora(patcher, files["lora"])
    full, partial = forward(with_lora, 1e30), forward(with_lora, with_lora.model_size() / 3)
    assert (full - mine).abs().max() > 1e-3
    # ComfyUI re-quantizes a merged LoRA into the layer's fp8 (stochastic rounding), the partial load applies it at
    # use in float: equal to fp8 rounding
    assert (partial - full).abs().max() <= 0.05 * full.abs().max()
