"""Every ComfyUI touch point of the pack, one module per concept: `paths` (model folders, prior folders, output
files), `progress` (progress bar, previews, node text, Cancel), `memory` (model management), `frame_vae` (the native
VAE for long video) and `native_model` (our DiT as a native MODEL, a native MODEL as our sampler's velocity model).
Node modules import ComfyUI only through these."""
