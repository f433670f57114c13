"""fp8 transformer checkpoints: plain float8_e4m3fn, ComfyUI scaled fp8 (both scale namings), and the official
HunyuanVideo fp8 `.pt` with its `*_map.pt`, each written here from a tiny float DiT the way its tool writes it and
loaded into every mode the Model Loader offers: fp8 kept in memory (the default), dequantized, int8."""

from __future__ import annotations

import pytest
import torch
from conftest import make_text
from safetensors.torch import save_file

from magic141_core import load_dit, tiny
from magic141_core.weights import CheckpointError
from magic141_core.weights.fp8 import Fp8View, dequantize, map_path, quantize_scaled
from magic141_core.dit.loading import random_dit
from magic141_core.runtime.offload import BlockSwap

FP8 = torch.float8_e4m3fn
CONFIG = tiny(double_blocks=2, single_blocks=2)
PROBE = "double_blocks.1.img_mlp.fc1"  # a block linear every format stores in fp8


def _is_linear_weight(key: str, tensor: torch.Tensor) -> bool:
    return key.endswith(".weight") and tensor.ndim == 2


def _is_block_linear(key: str, tensor: torch.Tensor) -> bool:  # what the official release stores in fp8
    return _is_linear_weight(key, tensor) and key.startswith(("double_blocks.", "single_blocks."))


def write(fmt: str, sd: dict[str, torch.Tensor], folder) -> tuple:
    """`sd` saved as `fmt`; returns (path, {layer: dequantized fp32 weight} of the fp8 layers)."""
    out, expected = {}, {}
    if fmt == "plain":
        for k, v in sd.items():
            out[k] = v.to(FP8) if _is_linear_weight(k, v) else v
            if _is_linear_weight(k, v):
                expected[k] = out[k].float()
        path = folder / "dit_fp8_e4m3fn.safetensors"
        save_file(out, path)
    elif fmt in ("comfy_scale_weight", "comfy_weight_scale"):
        scale_name = "scale_weight" if fmt == "comfy_scale_weight" else "weight_scale"
        out["scaled_fp8"] = torch.empty(0, dtype=FP8)  # ComfyUI's marker
        for k, v in sd.items():
            if _is_linear_weight(k, v):
                module = k.removesuffix(".weight")
                out[k], out[f"{module}.{scale_name}"] = quantize_scaled(v)
                out[f"{module}.{scale_name.replace('weight', 'input')}"] = torch.tensor(1.0)  # unused input scale
                expected[k] = out[k].float() * out[f"{module}.{scale_name}"]
            else:
                out[k] = v
        out = {f"model.diffusion_model.{k}": v for k, v in out.items()}  # as ComfyUI saves a diffusion model
        path = folder / f"dit_fp8_scaled_{scale_name}.safetensors"
        save_file(out, path)
    else:  # official: {"module": weights}, block linears fp8, scales in *_map.pt
        scales = {}
        for k, v in sd.items():
            if _is_block_linear(k, v):
                out[k], scales[k.removesuffix(".weight")] = quantize_scaled(v)
                expected[k] = out[k].float() * scales[k.removesuffix(".weight")]
            else:
                out[k] = v.to(torch.bfloat16)
        path = folder / "mp_rank_00_model_states_fp8.pt"
        torch.save({"module": out}, path)
        if fmt == "official":
            torch.save(scales, map_path(path))
    return path, expected


def forward(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    x, ref = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 1, 4, 4, generator=g)
    text = make_text(valid=[6], seed=7)
    with torch.no_grad():
        return model(x, torch.tensor([800.0]), text.tokens, text.mask, text.pooled, reference=ref).float()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def float_model():
    return random_dit(CONFIG, seed=31)


@pytest.fixture(scope="module")
def want(float_model):
    return forward(float_model)


FORMATS = ["plain", "comfy_scale_weight", "comfy_weight_scale", "official"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_fp8_format_loads_dequantized_and_close_to_the_float_model(fmt, tmp_path, float_model, want):
    path, expected = write(fmt, float_model.state_dict(), tmp_path)
    model = load_dit(path, dtype=torch.float32, keep_fp8=False)
    loaded = model.state_dict()
    for key, weight in expected.items():  # exactly fp8 x scale, never the raw fp8 value (448 at most)
        assert torch.equal(loaded[key], weight), key
    assert loaded[PROBE + ".weight"].abs().max() < 1  # the float model's weights are < 1; a missed scale gives 448
    got = forward(model)
    assert torch.isfinite(got).all()
    # fp8 e4m3 keeps 3 mantissa bits: measured 0.056 (plain), 0.064 (ComfyUI, every linear scaled), 0.035 (official,
    # block linears only); bound about 2x
    assert rel(got, want) < 0.12


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_fp8_format_stays_fp8_in_memory_and_equals_the_dequantized_load(fmt, tmp_path, float_model):
    """fp8 stays fp8: every linear the file stores in fp8 keeps its fp8 bytes (and its scale, fp32), cast and scaled
    per layer at use; the output equals dequantizing at load exactly in fp32 and within bf16 rounding in bf16."""
    path, expected = write(fmt, float_model.state_dict(), tmp_path)
    kept = load_dit(path, dtype=torch.float32)
    for key, weight in expected.items():
        layer = kept.get_submodule(key.removesuffix(".weight"))
        assert layer.weight.dtype == FP8, key
        scale = getattr(layer, "weight_scale", None)
        assert (scale is None) == (fmt == "plain")
        assert torch.equal(layer.weight.float() * (1 if scale is None else scale), weight), key
    assert (forward(kept) - forward(load_dit(path, dtype=torch.float32, keep_fp8=False))).abs().max() <= 1e-6
    got, reference = (forward(load_dit(path, dtype=torch.bfloat16, keep_fp8=keep)) for keep in (True, False))
    # bf16 weights: the dequantized load rounds fp8 x scale once, the kept one rounds the fp8 value (exact) then
    # multiplies in bf16; measured 0.0 to 4e-3 relative on this model
    assert torch.isfinite(got).all() and rel(got, reference) < 2e-2


@pytest.mark.parametrize("mode", ["bf16", "fp16", "int8", "block_swap"])
def test_official_fp8_loads_into_every_loader_mode(mode, tmp_path, float_model, want):
    path, _ = write("official", float_model.state_dict(), tmp_path)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)
    model = load_dit(path, dtype=dtype, int8=mode == "int8")
    if mode == "int8":
        from magic141_core.weights.int8 import quantization_map  # optimum-quanto: required (runtime dependency)

        assert PROBE in quantization_map(model)
    if mode == "block_swap":
        swap = BlockSwap(model, count=2, device="cpu")  # the swap logic, exercised on the CPU
    got = forward(model)
    assert torch.isfinite(got).all()
    if mode == "block_swap":
        assert swap.moves == 2
    # measured: 0.035 (fp32, fp16), 0.037 (bf16), 0.043 (int8 quantized from the dequantized fp8); bound about 2x
    assert rel(got, want) < 0.08


def test_official_fp8_without_its_map_is_refused_naming_the_map(tmp_path, float_model):
    path, _ = write("official_without_map", float_model.state_dict(), tmp_path)
    with pytest.raises(CheckpointError, match=r"mp_rank_00_model_states_fp8_map\.pt.*not found beside it"):
        load_dit(path)


def test_a_map_of_another_checkpoint_is_refused(tmp_path, float_model):
    path, _ = write("official", float_model.state_dict(), tmp_path)
    scales = torch.load(map_path(path), weights_only=True)
    del scales[PROBE]
    torch.save(scales, map_path(path))
    with pytest.raises(CheckpointError, match=f"has no scale for {PROBE}"):
        load_dit(path)


def test_the_view_hides_scales_and_markers_and_dequantizes_per_channel():
    weight = torch.tensor([[1.0, -2.0], [4.0, 8.0]]).to(FP8)
    sd = {"scaled_fp8": torch.empty(0, dtype=FP8), "a.weight": weight, "a.weight_scale": torch.tensor([0.5, 0.25]),
          "a.input_scale": torch.tensor(1.0), "a.bias": torch.ones(2)}
    view = Fp8View(sd, "x.safetensors")
    assert sorted(view) == ["a.bias", "a.weight"] and "a.weight_scale" not in view and len(view) == 2
    assert torch.equal(view["a.weight"], torch.tensor([[0.5, -1.0], [1.0, 2.0]]))
    assert view["a.bias"] is sd["a.bias"]
    with pytest.raises(CheckpointError, match="3 values for a weight of shape"):
        dequantize(weight, torch.ones(3))

@pytest.mark.parametrize("stored", [FP8, torch.float32])
def test_a_scaled_weight_is_scaled_at_use_and_never_in_place(stored):
    """`cast_weight` scales the cast's own copy in place (one temporary): a weight already in the compute dtype is
    the stored tensor itself and must come out scaled without changing, however often the layer runs."""
    from magic141_core.dit.layers import Linear

    layer = Linear(2, 2, bias=False)
    layer.weight.data = torch.tensor([[1.0, -2.0], [4.0, 8.0]]).to(stored)
    layer.register_buffer("weight_scale", torch.tensor([0.5, 0.25]))
    x = torch.tensor([[1.0, 1.0]])
    for _ in range(2):
        assert torch.equal(layer(x), torch.tensor([[-0.5, 3.0]]))  # (1 - 2) x 0.5, (4 + 8) x 0.25
    assert torch.equal(layer.weight.float(), torch.tensor([[1.0, -2.0], [4.0, 8.0]]))



@pytest.mark.parametrize(("weight_dtype", "int8"), [("bf16", "off"), ("fp16", "quantize on load")])
def test_the_model_loader_node_loads_a_comfyui_scaled_fp8_file(pack, comfy_base, float_model, want, weight_dtype,
                                                                int8):
    from conftest import run_node

    path, _ = write("comfy_scale_weight", float_model.state_dict(), comfy_base / "models" / "diffusion_models")
    (patcher,) = run_node(pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"], model_name=path.name,
                          weight_dtype=weight_dtype, int8=int8, block_swap=1)
    got = forward(patcher.model.diffusion_model)
    assert torch.isfinite(got).all() and rel(got, want) < 0.12
