"""Fill a model built on the meta device from a (lazy) state dict, layer by layer, quantizing linears on the way.

Shared by every loader that may quantize (the DiT, the LLaVA encoder). Each layer's tensors are read (memory-mapped
for safetensors), converted to the requested dtype, handed over with `load_state_dict(assign=True)`, and, when the
caller asks, quantized right away. So no randomly initialised copy is ever made, the float model is never held
twice, and quantize-on-load peaks at the int8 model plus one float layer and its temporaries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..device import release_freed_memory
from .files import CheckpointError, converted


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


def fill_(model: nn.Module, sd: Mapping[str, torch.Tensor], dtype: torch.dtype | None, name: str, what: str,
          quantize: Callable[[str], bool] | None = None) -> nn.Module:
    """Assign every tensor of `sd` to `model` (built on meta) layer by layer, strictly.

    `quantize(layer name)`: which float linears become int8 right after loading (None: none). `what` names the
    model in errors ("the transformer"). Returns the model in eval mode without gradients."""
    by_layer: dict[str, list[str]] = {}
    for key in sd:
        by_layer.setdefault(layer_of(key), []).append(key)
    consumed = set()
    # by name, not a list of modules: a list would keep every float layer alive after it is swapped for int8
    for prefix in [prefix for prefix, _ in _leaves(model)]:
        layer = model.get_submodule(prefix)
        keys = by_layer.get(prefix, [])
        # an int8 layer's scales keep their dtype (bf16): they must match the int8 kernel's activations
        _assign_own(layer, prefix, {k: sd[k] if k.endswith("._scale") else converted(sd[k], dtype) for k in keys},
                    name, what)
        consumed.update(keys)
        linear = isinstance(layer, nn.Linear)
        if quantize is not None and linear and quantize(prefix):
            from ..quant import quantize_layer_

            del layer  # the float layer goes as soon as its int8 copy is in place
            quantize_layer_(model, prefix)
        if linear:  # converted or quantized layers free temporaries glibc would otherwise keep mapped
            release_freed_memory()
    extra = sorted(set(sd) - consumed)
    if extra:
        raise CheckpointError(f"{name} has tensors {what} does not use, e.g. {extra[:5]}")
    return model.eval().requires_grad_(False)
