"""Block swap for small GPUs: the last N transformer blocks live in (pinned) CPU memory and are copied to the GPU
just before they run, then dropped again.

Swapping in copies each parameter with a non-blocking host-to-device transfer from its pinned CPU tensor; swapping
out just points the module back at the CPU tensor it kept, so no device-to-host copy ever happens (inference never
changes weights). Swapped blocks ignore `.to()` / `.cuda()` calls on the model, so a memory manager that moves the
whole model (ComfyUI's) leaves them where they are. Works with float and int8 (quanto) layers alike.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def _pinned(t: torch.Tensor) -> torch.Tensor:
    try:
        return t.pin_memory()
    except (RuntimeError, NotImplementedError):  # a tensor subclass without pinning support stays pageable
        return t


def _stay(self, fn, recurse=True):  # replaces Module._apply on swapped blocks: .to()/.cuda() leave them on the CPU
    return self


class BlockSwap:
    """Keep the last `count` blocks of `model` (in run order: double blocks, then single blocks) on the CPU and run
    each on `device`. `moves` counts the host-to-device block transfers (for tests and diagnostics)."""

    def __init__(self, model: nn.Module, count: int, device: torch.device | str):
        blocks = list(model.double_blocks) + list(model.single_blocks)
        if not 0 <= count <= len(blocks):
            raise ValueError(f"block swap count must be 0..{len(blocks)} (this model's blocks), got {count}")
        self.device = torch.device(device)
        self.blocks = blocks[len(blocks) - count:] if count else []
        self.moves = 0
        pin = torch.cuda.is_available()
        for block in self.blocks:
            block.to("cpu")
            if pin:
                block._apply(_pinned)
            block._apply = types.MethodType(_stay, block)
            block._swap_slots = [
                (module, store, name, tensor)
                for module in block.modules()
                for store in (module._parameters, module._buffers)
                for name, tensor in store.items() if tensor is not None
            ]
            block.register_forward_pre_hook(self._swap_in)
            block.register_forward_hook(self._swap_out)

    def _swap_in(self, block, args):
        for module, store, name, cpu_tensor in block._swap_slots:
            moved = cpu_tensor.to(self.device, non_blocking=True)
            store[name] = nn.Parameter(moved, requires_grad=False) if isinstance(cpu_tensor, nn.Parameter) else moved
        self.moves += 1

    def _swap_out(self, block, args, output):
        for module, store, name, cpu_tensor in block._swap_slots:
            store[name] = cpu_tensor

    def resident_bytes(self, model: nn.Module) -> int:
        """Bytes of the parameters that stay on the compute device (everything but the swapped blocks)."""
        swapped = {id(t) for block in self.blocks for *_, t in block._swap_slots}
        tensors = list(model.parameters()) + list(model.buffers())
        return sum(t.numel() * t.element_size() for t in tensors if id(t) not in swapped)


def install_block_swap(model: nn.Module, count: int, device: torch.device | str) -> BlockSwap | None:
    """Block swap for running on `device`; a no-op (None) on the CPU or for count 0."""
    device = torch.device(device)
    if count == 0 or device.type == "cpu":
        return None
    model.block_swap = BlockSwap(model, count, device)
    return model.block_swap
