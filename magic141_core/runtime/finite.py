"""Non-finite output, caught where it is made: every stage that produces numbers for the user checks them.

A NaN or inf in a latent or a frame becomes a black or garbled video with no error, the worst failure for an artist.
So the transformer's velocity (every denoising step), the VAE decoder's pixels, the text encoders' tokens and pooled
vector, each long-video window and the frames handed to Save MP4 are checked; a non-finite value raises
`NonFiniteOutput` naming the stage, the dtype it computed in and what to choose instead, before anything is cached
or written. The check is one reduction over a tensor the stage just made: small next to the stage itself.
"""

from __future__ import annotations

import torch

# what to choose instead, per stage (node setting, then the CLI flag)
DIT_ADVICE = ("load the transformer with weight_dtype bf16 or fp32 (Magic141 Model Loader; CLI --dtype); if it "
              "already is, its weights are broken (an fp8 file read without its scales, or a damaged download)")
VAE_ADVICE = ("decode in fp32 (ComfyUI: start it with --fp32-vae; CLI: --dtype fp32), and check the latent comes from "
              "a transformer loaded in bf16 or fp32")
TEXT_ADVICE = ("load the encoders with dtype fp32 or bf16 (Magic141 Encoder Loader 'dtype'); if that does not help, "
               "the encoder files are damaged")


class NonFiniteOutput(RuntimeError):
    """A stage produced NaN or inf; the message names the stage, its dtype and what to choose instead."""


def check_finite(tensor: torch.Tensor, stage: str, dtype: torch.dtype | str, advice: str) -> torch.Tensor:
    """`tensor` unchanged when every value is finite; else `NonFiniteOutput`.

    stage: what produced it, for the message ("the transformer at step 2 of 4"). dtype: the dtype the stage
    computed in (not necessarily the tensor's). advice: what the user should choose instead (the `*_ADVICE` texts).
    Integer tensors are always finite. Cost: one `isfinite` reduction."""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
        return tensor
    bad = (~torch.isfinite(tensor)).sum().item()
    kind = "NaN" if bool(torch.isnan(tensor).any()) else "inf"
    name = str(dtype).removeprefix("torch.")
    raise NonFiniteOutput(
        f"{stage} produced non-finite values ({kind} in {bad} of {tensor.numel()} outputs) computing in {name}. "
        f"Fix: {advice}. Nothing was written.")
