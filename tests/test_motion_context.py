"""Long video's motion context, clip extension and colour anchors, measured on the hand-set stand-ins of
`magic141_core.demo.standins` (a lossless frame VAE for striped pictures; a transformer that continues the pan its
context shows, one that darkens and blurs each window by 1 %), so every frame has a known right answer; and the Long
Video node's refusals of bad starts, on ComfyUI's own VIDEO type."""

from __future__ import annotations

import pytest
import torch

from magic141_core import Conditioning, TextConditioning
from magic141_core.demo.standins import DarkenDiT, PanDiT, StripeVAE, pan_clip, pan_speed
from magic141_core.video.long_video import LongVideoSettings, as_float, generate_long_video
from magic141_core.video.mp4 import to_uint8, write_mp4
from magic141_core.video.windows import WindowPlan

WINDOW, SPEED = 9, 2  # frames per window; the pan's whole pixels per frame


class Encoders:
    def encode(self, prompt, image, negative=False):
        return Conditioning(TextConditioning(torch.zeros(1, 4, 8), torch.ones(1, 4), torch.zeros(1, 8)))


class SpyVAE(StripeVAE):
    """Keeps every decoded window (before its context frames are dropped)."""

    def __init__(self):
        self.windows = []

    def decode_frames(self, latent):
        for chunk in super().decode_frames(latent):
            self.windows.append(to_uint8(chunk))
            yield chunk


def extend(clip, windows: int, context: int, vae=None, model=None, **settings):
    written, vae = [], vae or SpyVAE()
    settings = LongVideoSettings(context_frames=context, noise_augmentation=0.0, steps=1, **settings)
    generate_long_video(model or PanDiT(), Encoders(), vae, as_float(clip[:1]), ["pan on"] * windows, WINDOW,
                        written.append, settings, start_clip=clip)
    return torch.cat(written), vae


def test_a_pan_keeps_its_speed_across_seams_with_motion_context_and_stops_without():
    """Extending a clip that pans 2 px per frame: with 5 context frames every written frame is the pan continued
    (the N overlapping frames written once, the speed kept at every seam); with one frame (the classic sliding
    window) the stand-in sees no motion and the pan stops dead at the first seam."""
    clip = pan_clip(13, speed=SPEED)
    video, vae = extend(clip, 3, 5, include_start=True)
    plan = WindowPlan(3, WINDOW, 5, len(clip), include_start=True)
    assert len(video) == plan.total == 13 + 3 * (WINDOW - 5)
    assert torch.equal(video[:13], to_uint8(clip))  # the start clip first, bit for bit
    assert (video.float() - to_uint8(pan_clip(len(video), speed=SPEED)).float()).abs().max() <= 1  # Lab round trip
    profiles = video[:, 0].float() / 255
    assert [pan_speed(profiles[i:i + 2]) for i in range(len(video) - 1)] == [SPEED] * (len(video) - 1)
    # each window re-rendered the video's last 5 frames at its start (dropped): equal up to the VAE round trip
    # (exact for this VAE) and the colour match
    for k, decoded in enumerate(vae.windows):
        before = video[: 13 + k * (WINDOW - 5)]
        assert (decoded[:5].float() - before[-5:].float()).abs().max() <= 1, k
        assert torch.equal(decoded[5:], video[len(before): len(before) + WINDOW - 5])

    still, _ = extend(clip, 2, 1)
    assert len(still) == 2 * (WINDOW - 1) and all(torch.equal(frame, video[12]) for frame in still)


@pytest.mark.parametrize("anchor, bound", [("start", (0.0, 0.015)), ("previous", (0.8, 1.4))])
def test_a_fixed_colour_anchor_stops_compounding_drift(anchor, bound):
    """The stand-in darkens and blurs each window's start by 1 % (then 8-bit rounding): after 20 windows the
    start anchor leaves one step of darkening (~0.01 x the mean colour), the previous-window anchor lets it compound
    (1 - 0.99^20 = 18 % of the mean colour: `bound` is the fraction of that)."""
    start = pan_clip(1)
    written = []
    generate_long_video(DarkenDiT(), Encoders(), StripeVAE(), start, ["x"] * 20, WINDOW, written.append,
                        LongVideoSettings(color_anchor=anchor, noise_augmentation=0.0, steps=1))
    means = torch.cat(written).float().div(255).mean((1, 2))  # [F, 3]
    drift = (means[-1] - start.mean((0, 1, 2))).norm().item()
    compounding = (1 - 0.99**20) * start.mean((0, 1, 2)).norm().item()
    low, high = bound
    if anchor == "start":
        assert drift < high, drift
    else:
        assert low * compounding < drift < high * compounding, (drift, compounding)


def test_the_start_video_as_comfyui_decodes_it_is_written_first_bit_for_bit(comfy_base, pack, tmp_path):
    """ComfyUI's VIDEO (Load Video's type, on an MP4) as Long Video takes it: its frames as ComfyUI decodes them,
    fitted to the video size (here already at it), are written first unchanged (to 8 bits), then the extension."""
    from comfy_api.input_impl import VideoFromFile

    write_mp4(tmp_path / "clip.mp4", to_uint8(pan_clip(9, speed=SPEED)), fps=24)
    video = VideoFromFile(str(tmp_path / "clip.mp4"))
    frames = pack.nodes.host.paths.video_frames(video, "start_video")
    fitted = pack.magic141_core.video.start_image.fit_clip(frames, 96, 64)
    assert torch.equal(fitted, to_uint8(video.get_components().images))
    written, _ = extend(fitted, 1, 5, include_start=True)
    assert torch.equal(written[:9], to_uint8(video.get_components().images)) and len(written) == 9 + WINDOW - 5


def long_video_inputs(pack, **changes):
    return dict(model=None, vae=None, prior=torch.rand(1, 32, 48, 3), prompts="a", encoders=object(), duration=1,
                unit="windows", window_length=9, resolution="custom", width=48, height=32, steps=1, shift=5.0,
                guidance=1.0, seed=1, color_match=True, noise_augmentation=0.0, anchor="prior", fps=24.0,
                quality=19, filename_prefix="never") | changes


def test_bad_starts_get_one_message_each_before_anything_is_written(pack, comfy_base):
    from comfy_api.input_impl import VideoFromComponents
    from comfy_api.util import VideoComponents

    from conftest import run_node

    node = pack.NODE_CLASS_MAPPINGS["Magic141LongVideo"]
    before = sorted((comfy_base / "output").rglob("never*"))
    with pytest.raises(ValueError, match="context_frames 9 is not shorter than the window \\(9 frames\\): each window "
                                         "re-renders its 9 context frames .* at least 13 frames or fewer"):
        run_node(node, **long_video_inputs(pack, context_frames=9))
    empty = VideoFromComponents(VideoComponents(images=torch.zeros(0, 32, 48, 3), frame_rate=24))
    with pytest.raises(ValueError, match="Magic141 Long Video's start_video has no frames \\(an empty video\\)"):
        run_node(node, **long_video_inputs(pack, start_video=empty))
    with pytest.raises(ValueError, match="prior is a batch of 3 images and start_video is connected"):
        run_node(node, **long_video_inputs(pack, prior=torch.rand(3, 32, 48, 3), start_video=empty))
    with pytest.raises(ValueError, match="include_start writes the frames of a start clip first; there is no start"):
        run_node(node, **long_video_inputs(pack, include_start=True, model=object()))
    assert sorted((comfy_base / "output").rglob("never*")) == before  # nothing written
