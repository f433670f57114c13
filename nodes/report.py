"""Magic141 Long Video Report: how visible a long video's seams are and how far its colour drifts, per seam and per
window, with the worst seam's frames to look at."""

from __future__ import annotations

import torch

from ..magic141_core.video.seams import measure_seams, strip
from ..magic141_core.video.sidecar import SidecarReader, locate_sidecar
from ..magic141_core.video.windows import CONTEXT_FRAMES, DEFAULT_CONTEXT_FRAMES, MAX_WINDOWS, WindowPlan
from . import inputs
from .common import CATEGORY
from .host import paths, progress
from .host.schema import io

NODE = "Magic141 Long Video Report"


class Magic141LongVideoReport(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Magic141LongVideoReport",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Measures a long video's seams and colour drift (what the CLI's `long --report` prints): per seam, how "
                "much the picture jumps compared with the motion inside windows; per window, how far its average "
                "colour has drifted from its shot's first frame; and a verdict in words, shown on the node. Connect "
                "Long Video's video (or frames) and its sidecar (the exact windows, cuts left out); or any clip with "
                "its window length and context frames."),
            inputs=[
                io.Int.Input("window_length", default=81, min=5, max=257, step=4,
                             tooltip="Frames per window of the clip (ignored when the sidecar is connected)."),
                io.Int.Input("context_frames", default=DEFAULT_CONTEXT_FRAMES, min=CONTEXT_FRAMES[0],
                             max=CONTEXT_FRAMES[-1], step=4, tooltip="The motion context the clip was made with "
                                                                     "(ignored when the sidecar is connected)."),
                io.Video.Input("video", optional=True,
                               tooltip="The long video (Long Video's video output, Load Video, ...)."),
                io.Image.Input("frames", optional=True, tooltip="Or its frames as IMAGE (Long Video's frames output)."),
                io.String.Input("sidecar", optional=True, force_input=True, tooltip=(
                    "Long Video's sidecar output: where the windows and cuts really are (a start clip, shots).")),
            ],
            outputs=[
                io.String.Output(display_name="report", tooltip=(
                    "The verdict, then each figure in words: seam jump per seam, colour drift per window.")),
                io.Image.Output(display_name="worst_seam", tooltip=(
                    "The worst seam: the two frames before it and the two from it, side by side.")),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, window_length, context_frames, video=None, frames=None, sidecar="") -> io.NodeOutput:
        if (video is None) == (frames is None):
            raise ValueError(f"{NODE}: connect the video or its frames (one of them)")
        if sidecar and str(sidecar).strip():
            entry = locate_sidecar(paths.output_entry(sidecar, "sidecar"))
            plan = SidecarReader.read(entry, roots=[paths.output_dir()]).record.plan()
        else:
            plan = WindowPlan(MAX_WINDOWS, window_length, context_frames)  # as many windows as the clip holds
        if frames is not None:
            clip = iter(inputs.image_batch(frames, NODE, "frames")[..., :3].numpy())
        else:
            clip = paths.iter_video_frames(video, f"{NODE}'s video")
        starts = plan.window_starts()
        found = measure_seams(clip, plan.seams(), starts, [starts[k] for k in plan.cuts])
        progress.show_text(cls.hidden.unique_id, found.verdict())
        text = "\n".join(filter(None, [found.verdict(), found.summary(), found.details()]))
        worst = torch.from_numpy(strip(found.worst_frames)).float()[None]
        return io.NodeOutput(text, worst, ui={"text": [found.verdict()]})


NODES = [Magic141LongVideoReport]
