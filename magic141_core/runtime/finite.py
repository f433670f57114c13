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


_CHUNK = 1 << 24  # elements converted at a time for dtypes without a CPU min/max (fp8)


def is_finite(tensor: torch.Tensor) -> bool:
    """True unless a floating-point tensor holds NaN or +-inf. One min/max pass (NaN propagates into both), no
    temporary the size of the tensor; fp8 is widened a chunk at a time. Integer tensors are always finite."""
    if not tensor.is_floating_point() or tensor.numel() == 0 or tensor.device.type == "meta":
        return True
    flat = tensor.reshape(-1)
    chunks = [flat] if tensor.element_size() > 1 else [c.to(torch.float16) for c in flat.split(_CHUNK)]
    for chunk in chunks:
        low, high = torch.aminmax(chunk)
        if not (torch.isfinite(low) and torch.isfinite(high)):
            return False
    return True


def lora_advice(loras: str) -> str:
    """The advice when the transformer carries LoRAs (`loras`: which, for the message): they are the likeliest
    cause, so they are named first, and the dtype advice follows."""
    return (f"this transformer carries {loras}: a LoRA holding NaN / inf or extreme values, or applied at too high a "
            f"strength, gives this. Run once without it (or at a lower strength); if that works, the LoRA is the "
            f"cause. Otherwise {DIT_ADVICE}")


def dit_advice(model) -> str:
    """The advice for non-finite transformer output: `lora_advice` when LoRAs were applied to `model` by the core
    (`weights.lora.apply_lora_` records them), else `DIT_ADVICE`."""
    loras = getattr(model, "magic141_loras", None)
    return lora_advice("the LoRA(s) " + ", ".join(f"{name} (strength {s:g})" for name, s in loras)) if loras \
        else DIT_ADVICE


class NonFiniteOutput(RuntimeError):
    """A stage produced NaN or inf; the message names the stage, its dtype and what to choose instead.

    `finding`: what was found (the stage, the count, the dtype); `advice`: what to do (None: the finding is the
    whole message). `blamed_on(advice)`: the same finding with other advice, for a caller that knows more (a
    node whose MODEL carries LoRA patches)."""

    def __init__(self, finding: str, advice: str | None = None):
        self.finding, self.advice = finding, advice
        super().__init__(finding if advice is None else f"{finding}. Fix: {advice}. Nothing was written.")

    def blamed_on(self, advice: str) -> "NonFiniteOutput":
        return NonFiniteOutput(self.finding, advice)


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
        f"{stage} produced non-finite values ({kind} in {bad} of {tensor.numel()} outputs) computing in {name}", advice)
