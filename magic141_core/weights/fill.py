"""Fill a model built on the meta device from a (lazy) state dict, layer by layer, quantizing linears on the way.

Shared by every loader that may quantize (the DiT, the LLaVA encoder, CLIP-L). Before any tensor is read, every
layer's expected tensors are matched against the file's names and (from the file header) shapes, so a file that
does not fit is refused before anything is allocated. Then each layer's tensors are read (memory-mapped for
safetensors), converted to the requested dtype, checked for NaN / inf (one `aminmax` pass per tensor: no copy, no
mask), handed over with `load_state_dict(assign=True)`, and, when the caller asks, quantized right away. So no
randomly initialised copy is ever made, the float model is never held twice, quantize-on-load peaks at the int8
model plus one float layer and its temporaries, and the host's interrupt (`interrupt.check_interrupt`) is honoured
between layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..runtime.device import release_freed_memory
from ..runtime.finite import is_finite
from ..runtime.interrupt import check_interrupt
from .files import CheckpointError, converted
from .fp8 import fp8_is_finite

def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that hold tensors themselves (linears, norms, convs, embeddings): the loading granularity."""
    return [(name, m) for name, m in model.named_modules()
            if any(t is not None for t in (*m._parameters.values(), *m._buffers.values()))]


def layer_of(key: str) -> str:
    """Module name of a state-dict key: drop the tensor name (and quanto's `weight._data` / `weight._scale`)."""
    module, _, tensor = key.rpartition(".")
    if tensor in ("_data", "_scale"):
        module = module.rpartition(".")[0]
    return module


def _own_tensors(layer: nn.Module) -> dict[str, torch.Tensor]:
    buffers = {k: v for k, v in layer._buffers.items() if k not in layer._non_persistent_buffers_set}
    return {k: v for k, v in (*layer._parameters.items(), *buffers.items()) if v is not None}


def _check_plan(leaves: dict[str, nn.Module], sd: Mapping, by_layer: dict[str, list[str]], name: str,
                what: str) -> None:
    """Refuse, before reading any tensor, a file whose names or (header) shapes do not fit the model built."""
    stray = sorted(k for layer, keys in by_layer.items() if layer not in leaves for k in keys)
    if stray:
        raise CheckpointError(f"{name} has tensors {what} does not use, e.g. {stray[:5]}")
    # shapes from the file header (lazy files) or the tensors themselves (a dict already in memory); else per layer
    header = sd.shape if hasattr(sd, "shape") else (lambda k: sd[k].shape) if isinstance(sd, dict) else None
    for prefix, layer in leaves.items():
        for tensor_name, tensor in _own_tensors(layer).items():
            key = f"{prefix}.{tensor_name}" if prefix else tensor_name
            if key not in sd:
                if key + "._data" in sd:
                    continue  # a pre-quantized weight (quanto's _data / _scale), checked when its layer loads
                raise CheckpointError(f"{name} does not fit {what} its shapes describe: tensor '{key}' is missing")
            if header is not None and tuple(header(key)) != tuple(tensor.shape):
                raise CheckpointError(f"{name} does not fit {what} its shapes describe: tensor '{key}' has shape "
                                      f"{list(header(key))}, the model needs {list(tensor.shape)}")


def _check_kinds(layer: nn.Module, prefix: str, part: dict[str, torch.Tensor], name: str, what: str) -> None:
    """Refuse integer (or bool) data where the model holds floating-point weights, naming the tensor and both
    dtypes (torch's own error would speak of gradients and equal shapes)."""
    own = _own_tensors(layer)
    for key, tensor in part.items():
        target = own.get(key[len(prefix) + 1:] if prefix else key)
        if target is not None and target.is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(f"{name}: tensor '{key}' holds {str(tensor.dtype).removeprefix('torch.')} values "
                                  f"where {what} has floating-point weights. The file is damaged or not a weight "
                                  "file of this model; choose another file")


def _assign_own(layer: nn.Module, prefix: str, part: dict[str, torch.Tensor], name: str, what: str) -> None:
    """Hand `layer` its own tensors (not its children's) by assignment, strictly, through the module's own loading
    hook, so modules that load specially (quanto's int8 layers) do so."""
    missing, unexpected, errors = [], [], []
    layer._load_from_state_dict(part, prefix + "." if prefix else "", {"assign_to_params_buffers": True}, True,
                                missing, unexpected, errors)
    problems = errors + [f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected]
    if problems:
        detail = " ".join(" ".join(problems).split())
        raise CheckpointError(f"{name} does not fit {what} its shapes describe, in {prefix or 'the model'}: "
                              f"{detail[:600]}")


def _read_finite(sd: Mapping[str, torch.Tensor], key: str, dtype: torch.dtype | None, name: str) -> torch.Tensor:
    """Tensor `key` in `dtype`, refused when it holds NaN / inf (in the file, or only after the conversion)."""
    tensor = converted(sd[key], dtype)
    if is_finite(tensor):
        return tensor
    if is_finite(sd[key]):
        raise CheckpointError(f"{name}: tensor '{key}' holds values beyond the range of {dtype} (they become inf "
                              "when converted); load it in bf16 or fp32 instead")
    raise CheckpointError(f"{name}: tensor '{key}' holds NaN or infinite values (the first such tensor found); the "
                          "file is damaged or its training diverged. Refused: it would give a black or noisy video. "
                          "Choose another file")


def _read_fp8(sd, layer: nn.Module, prefix: str, keys: list[str], name: str) -> dict[str, torch.Tensor] | None:
    """A linear's tensors with its weight kept as stored in fp8 and its scale as `weight_scale` (fp32), when `sd`
    (a `weights.fp8.Fp8View`) holds that weight in fp8; else None. A `weight_scale` buffer is registered on the layer
    so that it loads with the weight (`dit.layers.cast_weight` and the host read it)."""
    key = f"{prefix}.weight" if prefix else "weight"
    stored = sd.fp8(key) if hasattr(sd, "fp8") and hasattr(layer, "in_features") and key in keys else None
    if stored is None:
        return None
    weight, scale = stored
    if not fp8_is_finite(weight) or (scale is not None and not is_finite(torch.as_tensor(scale).float())):
        raise CheckpointError(f"{name}: tensor '{key}' (fp8) or its scale holds NaN or infinite values; the file is "
                              "damaged. Refused: it would give a black or noisy video. Choose another file")
    part = {key: weight}
    if scale is not None:
        scale = torch.as_tensor(scale, dtype=torch.float32)
        layer.register_buffer("weight_scale", torch.empty(scale.shape, device="meta"))
        part[f"{key}_scale"] = scale
    return part


def fill_(model: nn.Module, sd: Mapping[str, torch.Tensor], dtype: torch.dtype | None, name: str, what: str,
          quantize: Callable[[str], bool] | None = None, keep_fp8: bool = False) -> nn.Module:
    """Assign every tensor of `sd` to `model` (built on meta) layer by layer, strictly.

    `quantize(layer name)`: which float linears become int8 right after loading (None: none). `keep_fp8`: linears
    whose weight `sd` (a `weights.fp8.Fp8View`) holds in fp8 keep it in fp8, with a `weight_scale` buffer when it is
    scaled (other tensors take `dtype`); else fp8 weights are dequantized into `dtype` like any other. `what` names
    the model in errors ("the transformer"). Raises CheckpointError, before reading any tensor, for names or header
    shapes that do not fit; while loading, for a tensor holding NaN / inf (naming the first). The host's interrupt
    is checked between layers. Returns the model in eval mode without gradients."""
    by_layer: dict[str, list[str]] = {}
    for key in sd:
        by_layer.setdefault(layer_of(key), []).append(key)
    leaves = dict(_leaves(model))
    _check_plan(leaves, sd, by_layer, name, what)
    consumed = set()
    names = list(leaves)
    del leaves  # by name from here: holding the modules would keep every float layer alive after its int8 swap
    for prefix in names:
        check_interrupt()
        layer = model.get_submodule(prefix)
        keys = by_layer.get(prefix, [])
        kept = _read_fp8(sd, layer, prefix, keys, name) if keep_fp8 else None
        # an int8 layer's scales keep their dtype (bf16): they must match the int8 kernel's activations
        part = {k: _read_finite(sd, k, None if k.endswith("._scale") else dtype, name) for k in keys
                if kept is None or k not in kept}
        part.update(kept or {})
        _check_kinds(layer, prefix, part, name, what)
        _assign_own(layer, prefix, part, name, what)
        consumed.update(keys)
        linear = isinstance(layer, nn.Linear)
        if quantize is not None and linear and quantize(prefix):
            from .int8 import quantize_layer_

            del layer  # the float layer goes as soon as its int8 copy is in place
            quantize_layer_(model, prefix)
        if linear:  # converted or quantized layers free temporaries glibc would otherwise keep mapped
            release_freed_memory()
    extra = sorted(set(sd) - consumed)
    if extra:
        raise CheckpointError(f"{name} has tensors {what} does not use, e.g. {extra[:5]}")
    return model.eval().requires_grad_(False)
