"""ComfyUI's node schema (V3) as the pack uses it: `io` and `ComfyExtension` from the comfy_api version ComfyUI's
docs tell packs to pin (v0_0_2: both supported hosts, 0.30.0 and 0.3.75, have it; `latest` moves under a pack),
the pack's own socket types, and the two bridges a mixed pack needs while modules are converted one by one.

What 0.3.75's V3 lacks, and how the pack stays the same there:
- `advanced=` on inputs (0.30.0 has it; 0.3.75's inputs take neither it nor `extra_dict`): `advanced(input)` sets
  the flag after construction (0.3.75: in the input's `extra_dict`, which its `as_dict` copies into the options),
  so the frontend folds the same widgets on both;
- combo validation: 0.3.75 checks a V1 list-typed combo's value, but never a V3 `COMBO`'s; every combo value the
  pack reads goes through `choice`, which refuses an unknown one by name on either host.
"""

from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io

__all__ = ["advanced", "ComfyExtension", "ENCODERS", "CONDITIONING", "PRIOR_FOLDER", "choice", "io"]


ENCODERS = io.Custom("MAGIC141_ENCODERS")  # Magic141Encoders: LLaVA-Llama-3 + CLIP-L, from the Encoder Loader
CONDITIONING = io.Custom("MAGIC141_CONDITIONING")  # magic141_core Conditioning: text + image tokens (+ reference)
PRIOR_FOLDER = io.Custom("MAGIC141_PRIOR_FOLDER")  # magic141_core.priors.FolderPrior: an indexed folder + its CLIP


def advanced(item):
    """`item` (an io input) marked advanced: the frontend folds it under "advanced" (0.30.0 and 0.3.75 alike)."""
    if hasattr(item, "advanced"):
        item.advanced = True
    else:
        item.extra_dict["advanced"] = True
    return item


def choice(value: str, options, name: str, node: str) -> str:
    """`value` when it is one of `options` (a combo's choices), else ValueError naming the input, the node and the
    choices (0.3.75 never checks a V3 combo's value, 0.30.0 does before the node runs)."""
    if value not in options:
        raise ValueError(f"{node}: {name} {value!r} is not one of {list(options)}; pick one of them on the node")
    return value

