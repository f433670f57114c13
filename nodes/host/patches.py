"""What native nodes attach to a MODEL, for the samplers that are not ComfyUI's (Magic141 Sampler, Long Video).

Those run the core's own Euler loop and call the transformer directly. What acts per forward (block replacements,
attention overrides, attention-output patches: the MODEL's transformer options) goes with every call, as ComfyUI's
sampler passes it. What acts inside ComfyUI's sampling (wrappers such as EasyCache's or TorchCompileModel's, CFG
functions such as Skip Layer Guidance's, context windows) cannot run there: such a MODEL is refused, naming the
node, so nothing runs silently unpatched. Native KSampler / SamplerCustom run all of it on either model."""

from __future__ import annotations

from ...magic141_core.dit.hooks import describe

PER_FORWARD = ("patches", "patches_replace", "optimized_attention_override")
SAMPLER_FUNCTIONS = {  # model_options entry -> what it does, for the message
    "model_function_wrapper": "wraps the model call",
    "sampler_cfg_function": "replaces the CFG formula",
    "sampler_pre_cfg_function": "acts before CFG",
    "sampler_post_cfg_function": "acts after CFG",
    "sampler_calc_cond_batch_function": "replaces the conditional batch",
    "denoise_mask_function": "changes the denoise mask",
}


def _wrappers(found: list[str], wrappers: dict) -> None:
    for kind, by_key in (wrappers or {}).items():
        for key, fns in (by_key or {}).items():
            if fns:
                found.append(f"a '{kind}' wrapper '{key}' from {describe(fns[0])}")


def sampler_level(patcher) -> list[str]:
    """Descriptions of what `patcher` carries that only ComfyUI's own sampling runs (empty: nothing)."""
    options = getattr(patcher, "model_options", {}) or {}
    found: list[str] = []
    _wrappers(found, getattr(patcher, "wrappers", {}))
    _wrappers(found, options.get("transformer_options", {}).get("wrappers", {}))
    for name, what in SAMPLER_FUNCTIONS.items():
        value = options.get(name)
        for fn in value if isinstance(value, list) else [value] if value is not None else []:
            found.append(f"a {name} ({what}) from {describe(fn)}")
    if options.get("context_handler") is not None:
        found.append(f"context windows ({type(options['context_handler']).__name__}, e.g. from Context Windows "
                     "(Manual))")
    return found


def check_own_sampling(patcher, node: str) -> None:
    """Refuse a MODEL whose patches only ComfyUI's sampling can run, naming them and the way out."""
    found = sampler_level(patcher)
    if found:
        raise ValueError(
            f"{node} runs its own sampling loop, but the MODEL carries {'; '.join(found)}, which act inside "
            "ComfyUI's sampler and would be skipped here. Connect this MODEL to KSampler (or SamplerCustom), which "
            f"runs them on this model, or take the MODEL from before those nodes for {node}")


def per_forward_options(patcher) -> dict:
    """The MODEL's transformer options that act inside one forward (see the module docstring); {} when none."""
    options = (getattr(patcher, "model_options", {}) or {}).get("transformer_options", {}) or {}
    return {k: options[k] for k in PER_FORWARD if options.get(k)}


class WithOptions:
    """The core DiT with the MODEL's per-forward transformer options added to every call (and `sigmas`, sigma =
    timestep / 1000, as ComfyUI's sampler sets them). Everything else is the DiT's."""

    def __init__(self, dit, options: dict):
        self.dit, self.options = dit, options

    def __getattr__(self, name):
        return getattr(self.dit, name)

    def __call__(self, x, t, *args, **kwargs):
        return self.dit(x, t, *args, transformer_options={**self.options, "sigmas": t / 1000.0}, **kwargs)
