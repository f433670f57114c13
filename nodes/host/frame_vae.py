"""ComfyUI's native VAE as the long-video runner's frame VAE."""

from __future__ import annotations


class NativeFrameVAE:
    """ComfyUI's native VAE as the long-video runner's `FrameVAE`: encode a window's context frames (1 + 4(L-1)
    frames into L latent frames, as native HunyuanImageToVideo encodes several start frames), decode one window.

    Each window is decoded in one temporal piece (spatially tiled, `tile` px with `overlap`): a window split in time
    by the native tiled decode differs from the one-pass decode after the split (a visible jump mid-window), while
    one temporal piece equals it. Memory: one spatial tile of the whole window at a time.
    The native encode returns the posterior mean (the official code samples; for HunyuanVideo's VAE the posterior
    std is tiny), so the seed is unused here."""

    def __init__(self, vae, tile: int = 256, overlap: int = 64):
        self.vae, self.tile, self.overlap = vae, tile, overlap

    def parameters(self):
        """The VAE's weights (for `video.sidecar.fingerprint`)."""
        return self.vae.first_stage_model.parameters()

    @property
    def compute_dtype(self):
        """The dtype ComfyUI runs the VAE in (named in a non-finite-output error)."""
        return getattr(self.vae, "vae_dtype", "ComfyUI's VAE dtype")

    def encode_frames(self, frames, seed):
        return self.vae.encode(frames[..., :3])  # [F, H, W, 3] -> [1, 16, L, h, w]

    def decode_frames(self, latent):
        spatial = self.vae.spacial_compression_decode()
        frames = self.vae.decode_tiled(latent, tile_x=self.tile // spatial, tile_y=self.tile // spatial,
                                       overlap=self.overlap // spatial, tile_t=max(2, latent.shape[2]), overlap_t=1)
        yield frames.reshape(-1, *frames.shape[-3:])  # [F, H, W, 3]
