"""Magic141 Long Video: a minute-long shot from one image by chaining 4-step windows, written to MP4 as it goes."""

from __future__ import annotations

import dataclasses

from ..magic141_core.runtime.finite import NonFiniteOutput
from ..magic141_core.sampling.sampler import latent_frames
from ..magic141_core.video.long_video import ClipFrames, LongVideoSettings, generate_long_video
from ..magic141_core.text import TemplateEncoders
from ..magic141_core.video import shots as video_shots
from ..magic141_core.video.resume import LongVideoFile, check_continues, check_models, continued_board, first_window, \
    known_shots
from ..magic141_core.video.sidecar import SidecarReader, fingerprint, locate_sidecar
from ..magic141_core.video.start_image import DRAFT_WINDOW_FRAMES, DRAFT_WINDOWS, EARLIER_DRAFT_LONG, fit_clip, \
    size_choices
from ..magic141_core.video.windows import CONTEXT_FRAMES, CUT, DEFAULT_CONTEXT_FRAMES, MAX_WINDOWS, WindowPlan, \
    WindowPrompt, count_windows, storyboard
from . import inputs
from .common import CATEGORY, CFG_INPUTS, LONG_VIDEO_SIZE_INPUTS, SAMPLING_INPUTS, fit_start_image, output_linked
from .host import frame_vae, native_model, paths, progress
from .host.schema import ENCODERS, PRIOR_FOLDER, advanced, choice, io
from .native import FixedEncoders, check_template, check_widths, magic141_conditioning

FRAMES_LIMIT_MB = 2048  # the frames output's default memory limit: 81 frames at 720p take 854 MB
LENGTH_WIDGETS = ("duration", "unit", "window_length", "resolution", "width", "height")
ANCHORS = {"prior": "prior", "new frame": "frame"}  # the anchor widget's choices -> LongVideoSettings.anchor
COLOR_ANCHORS = {"start": "start", "previous window": "previous"}  # color_anchor's choices -> the settings' value
UNITS = ["seconds", "windows"]  # what duration counts

NODE = "Magic141 Long Video"


DESCRIPTION = (
    "Renders a long shot as a chain of windows: each window continues the last frames of the video so far "
    "(context_frames, colour-matched to the start, re-encoded), so motion keeps its speed across the seams; the "
    "prior's image tokens stay the identity anchor, and the repeated context frames are dropped. It can also "
    "extend a clip (start_video, or an image batch as prior). Each window is appended to the MP4 as soon as it "
    "is done, so memory stays flat. One prompt per line directs the windows in order (the last line repeats); "
    f"a line starting with {CUT} starts a new shot from a new prior (shot_images, or shot_priors: retrieved for "
    "that line). If you stop the run, the finished windows are kept as <name>_partial.mp4. Every window is "
    "remembered in a sidecar beside the MP4 (<name>.m141): give it as resume to finish a stopped run, or with "
    "from_window to re-roll one window and those after it (the windows before it are reused bit for bit). A "
    "progress bar shows while it renders; the finished video plays in the node. The node states the length it "
    f"renders, in seconds: on a CPU (auto: the draft) the windows asked, up to {DRAFT_WINDOWS}, of at most "
    f"{DRAFT_WINDOW_FRAMES} frames."
)

INPUTS = [
    io.Model.Input("model", tooltip="From Magic141 Model Loader (any family), or a native HunyuanVideo image-to-video "
                                    "model from Load Diffusion Model."),
    io.Vae.Input("vae", tooltip="The HunyuanVideo VAE (native Load VAE)."),
    io.Image.Input("prior", tooltip="The image the shot starts from; or a clip to extend, as an image batch (its first "
                                    "frame is then the identity anchor)."),
    io.String.Input("prompts", multiline=True, tooltip="One prompt per line, one line per window in order; the last "
                                                       "line repeats for the remaining windows."),
    # whole steps: the frontend shows "3" windows / "60" seconds, not "3.0" (the clip grows in whole windows, ~3.3 s
    # at 24 fps); min stays 0.1 and values stay floats, so older workflows keep meaning
    io.Float.Input("duration", default=10.0, min=0.1, max=3600.0, step=1.0, round=1.0,
                   tooltip="Length in whole seconds, or a number of windows (see unit)."),
    io.Combo.Input("unit", options=UNITS, default="seconds", tooltip="What duration counts."),
    io.Int.Input("window_length", default=81, min=5, max=257, step=4, tooltip=(
        "Frames per window, 4k+1; 81 is the model's native length. The draft (auto on a CPU) makes the windows "
        f"asked, up to {DRAFT_WINDOWS}, of at most {DRAFT_WINDOW_FRAMES} frames; 540p, 720p and custom make them all "
        "at this length.")),
    *LONG_VIDEO_SIZE_INPUTS,
    *SAMPLING_INPUTS,
    io.Boolean.Input("color_match", default=True, tooltip="Match each new start frame's colours (L*a*b* mean/std) to "
                                                          "the prior, against colour drift."),
    advanced(io.Float.Input("noise_augmentation", default=0.02, min=0.0, max=1.0, step=0.005, tooltip=(
        "Noise added to each re-encoded start latent, against compounding artefacts."))),
    advanced(io.Combo.Input("anchor", options=list(ANCHORS), default="prior", tooltip=(
        "Image tokens from the original prior (identity anchor) or from each window's start frame."))),
    io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=1.0, tooltip="Frame rate."),
    io.Int.Input("quality", default=19, min=0, max=51, tooltip="x264 CRF: lower is better."),
    io.String.Input("filename_prefix", default="Magic141/long", tooltip="Name inside the output folder."),
    ENCODERS.Input("encoders", optional=True, tooltip=(
        "From Magic141 Encoder Loader: each window's prompt line is encoded with the prior's image tokens, in the "
        "prompt template of the model's family.")),
    io.Conditioning.Input("conditioning", optional=True, tooltip=(
        "Instead of encoders: native CONDITIONING (e.g. TextEncodeHunyuanVideo_ImageToVideo) used for every window; "
        "the prompts text is then ignored.")),
    io.Conditioning.Input("negative", optional=True, tooltip="Native negative CONDITIONING, for guidance > 1 only."),
    io.Int.Input("frames_limit_mb", default=FRAMES_LIMIT_MB, min=0, max=1 << 20, step=256, optional=True, tooltip=(
        "The most memory (MB) the frames output may take as IMAGE (width x height x 3 x 4 bytes per frame). When "
        "frames is connected and the clip is larger, the run stops before rendering and says the size needed; use "
        "the video output for long clips (it streams from the file).")),
    io.Int.Input("context_frames", default=DEFAULT_CONTEXT_FRAMES, min=CONTEXT_FRAMES[0], max=CONTEXT_FRAMES[-1],
                 step=4, optional=True, tooltip=(
        "Motion context: each window continues the last N frames of the video so far (1, 5, 9 or 13: 1 to 4 latent "
        "frames), so a pan or a walk keeps its speed across seams. 1: one seam frame, as before. Must be shorter "
        "than the window.")),
    advanced(io.Combo.Input("color_anchor", options=list(COLOR_ANCHORS), default="start", optional=True, tooltip=(
        "What color_match matches each window's context to: the start (the prior, or the start clip's last frames: "
        "no drift) or the previous window (follows colour changes, and drift)."))),
    io.Boolean.Input("include_start", default=False, optional=True, tooltip=(
        "Extending a clip: write its frames first, so the MP4 is the whole extended clip (unchanged, bit for bit as "
        "8-bit frames).")),
    io.Video.Input("start_video", optional=True, tooltip=(
        "A clip to extend (e.g. Load Video): the video continues from its last frames, fitted to the video size "
        "like the prior; the prior is then the identity anchor only.")),
    *CFG_INPUTS,  # (issue 28) before issue 30's inputs: saved workflows keep their widget order
    io.String.Input("resume", default="", optional=True, tooltip=(
        "Continue a recorded long video: its sidecar (<name>.m141, the sidecar output) or its MP4 (<name>.mp4 or "
        "<name>_partial.mp4), inside the output folder. A new MP4 and sidecar are written; the old ones stay. "
        "Empty: a new video.")),
    io.Int.Input("from_window", default=0, min=0, max=MAX_WINDOWS, optional=True, tooltip=(
        "With resume: 0 renders the first unfinished window on; k re-rolls window k and those after it with this "
        "node's prompts and seed (windows before k are reused bit for bit, not rendered).")),
    io.Image.Input("shot_images", optional=True, tooltip=(
        f"Priors of the shots: the prompt lines starting with {CUT} take these images in order (fitted like the "
        "prior).")),
    PRIOR_FOLDER.Input("shot_priors", optional=True, tooltip=(
        f"From Retrieve Prior's prior_folder: each line starting with {CUT} starts from the folder's image nearest "
        "that line's prompt (CLIP).")),
]

# outputs are only ever appended (saved workflows link them by index); without the VIDEO type (an old host) the
# whole-clip frames take its place
OUTPUTS = [
    io.Image.Output(display_name="last_window", tooltip="The frames of the last window (a preview)."),
    io.String.Output(display_name="filename", tooltip="The video file, relative to the output folder."),
    *([io.Video.Output(display_name="video", tooltip=(
        "The whole video as ComfyUI's VIDEO type, read from the file on disk when used (never held in memory): for "
        "Get Video Components, Save Video and video nodes."))] if paths.VIDEO_OUTPUT else []),
    io.Image.Output(display_name="frames", tooltip=(
        "Every frame of the whole video as IMAGE (for upscaling, interpolation, video-combine nodes), held in "
        "memory: refused before rendering when larger than frames_limit_mb; unconnected, nothing is held.")),
    io.String.Output(display_name="sidecar", tooltip=(
        "The sidecar folder beside the MP4 (relative to the output folder): for resume, and for Long Video Report's "
        "layout of windows and cuts.")),
]
FRAMES_OUTPUT = 2 + len(paths.VIDEO_OUTPUT)  # the frames output's slot (held only when linked)


class Magic141LongVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="Magic141LongVideo", display_name=NODE, category=CATEGORY, description=DESCRIPTION,
                         inputs=INPUTS, outputs=OUTPUTS, is_output_node=True,
                         hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo, io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, resolution):
        """The resolution combo's entries, and the draft entry of earlier versions (saved workflows keep running)."""
        choices = size_choices(long_video=True)
        return resolution in choices or resolution in EARLIER_DRAFT_LONG or \
            f"resolution must be one of {', '.join(choices)}; got {resolution!r}"

    @classmethod
    def execute(cls, model, vae, prior, prompts, filename_prefix, encoders=None, conditioning=None, negative=None,
                frames_limit_mb=FRAMES_LIMIT_MB, start_video=None, resume="", from_window=0, shot_images=None,
                shot_priors=None, **widgets) -> io.NodeOutput:
        """`widgets`: the length and size (`LENGTH_WIDGETS`) and the fields of the core's `LongVideoSettings`, which
        the CLI's `long` builds the same way (absent optional ones take its defaults)."""
        prompt, extra_pnginfo, unique_id = cls.hidden.prompt, cls.hidden.extra_pnginfo, cls.hidden.unique_id
        length = {name: widgets.pop(name) for name in LENGTH_WIDGETS}
        choice(length["unit"], UNITS, "unit", NODE)
        widgets["anchor"] = ANCHORS[choice(widgets["anchor"], ANCHORS, "anchor", NODE)]
        if "color_anchor" in widgets:
            anchor = choice(widgets["color_anchor"], COLOR_ANCHORS, "color_anchor", NODE)
            widgets["color_anchor"] = COLOR_ANCHORS[anchor]
        settings = LongVideoSettings(**widgets)  # every value checked
        window_length = length["window_length"]
        latent_frames(window_length)  # validates 4k+1
        count_windows(length["duration"], length["unit"], settings.fps, window_length, settings.context_frames)
        if (encoders is None) == (conditioning is None):
            raise ValueError("connect either encoders (Magic141 Encoder Loader) or a native conditioning "
                             "(e.g. TextEncodeHunyuanVideo_ImageToVideo), not both and not neither")
        inputs.image_batch(prior, NODE, "prior")
        if shot_images is not None:
            inputs.image_batch(shot_images, NODE, "shot_images")
        old = read_sidecar(resume, from_window)
        clip = prior if prior.shape[0] > 1 else None  # an image batch: a clip to extend
        if start_video is not None:
            if clip is not None:
                raise ValueError(f"prior is a batch of {prior.shape[0]} images and start_video is connected: give one "
                                 "clip to extend (start_video, with one prior image as the identity anchor)")
            clip = paths.video_frames(start_video, "Magic141 Long Video's start_video")
        # the size policy (auto / draft / buckets / custom) is the core's; draft also caps the windows
        start, size = fit_start_image(prior[:1], length["resolution"], length["width"], length["height"],
                                      window_length, name="prior", long_video=True, node=NODE)
        notes, clip_length = [], 0 if clip is None else len(clip)
        if clip is not None:  # fitted like the prior: every frame when it is written first, else the context only
            if tuple(clip.shape[1:3]) != tuple(start.shape[1:3]):
                notes.append(f"start clip {clip.shape[2]}x{clip.shape[1]} cropped to {start.shape[2]}x{start.shape[1]}"
                             " like the prior")
            clip = fit_clip(clip, start.shape[2], start.shape[1],
                            keep=None if settings.include_start else settings.context_frames)
        try:
            # the windows asked are counted at the window length asked (what the node shows); a draft renders the
            # first few of them, shorter, and says so in seconds
            size = size.with_windows(count_windows(length["duration"], length["unit"], settings.fps, window_length,
                                                   settings.context_frames, clip_length))
            window_length, windows = size.frames, size.windows
            plan = WindowPlan(windows, window_length, settings.context_frames, clip_length, settings.include_start)
        except ValueError as e:
            raise ValueError(f"{e} ({size.describe()})") from None
        asked = f"{length['duration']:g} s" if length["unit"] == "seconds" else None
        notes.insert(0, size.describe(settings.fps, asked, plan.total))
        fixed = None
        if conditioning is not None:  # the prompts text is not used: no lines, no cuts
            fixed = magic141_conditioning(conditioning, negative)
            encoders, board = FixedEncoders(fixed), [WindowPrompt("(native conditioning)")] * windows
        else:
            board = storyboard(prompts, windows)
        first = 0
        if old is not None:
            first = first_window(old, from_window - 1 if from_window else None)
            board = continued_board(old, first, board, windows)
            check_continues(old, settings, start.shape[2], start.shape[1], window_length,  # the clip: recorded
                            clip_length if clip is not None else old.record.start_frames, start)
            notes.append(f"continues {old.folder.name} from window {first + 1}: {first} window(s) reused")
        shots, sources = video_shots.shot_priors(board, start.shape[2], start.shape[1], shot_images, shot_priors,
                                                 first, () if old is None else known_shots(old, board))
        progress.show_text(unique_id, "Magic141 Long Video: " + "; ".join(notes))
        dit = native_model.velocity_model(model, NODE, fixed and fixed.image_condition)
        if fixed is not None:
            check_widths(dit, fixed, NODE)
            check_template(dit, fixed, NODE)
        else:  # each window's prompt line in the prompt template of the model's family
            encoders = TemplateEncoders(encoders, dit.family.template, dit.family.image_interleave)
        frames_vae = frame_vae.NativeFrameVAE(vae)
        models = {"transformer": fingerprint(dit), "VAE": fingerprint(frames_vae)}
        if old is not None:
            check_models(old, models)
        metadata = {**(extra_pnginfo or {}), **({"prompt": prompt} if prompt is not None else {})}
        metadata = metadata if paths.metadata_enabled() else {}
        path, record = paths.output_file(filename_prefix, "mp4", start.shape[2], start.shape[1])
        if old is None:
            video = LongVideoFile.create(path, settings, board, start, window_length, start_clip=clip, shots=shots,
                                         shot_sources=sources, models=models, metadata=metadata)
        else:
            video = LongVideoFile.resume(path, old, first, settings, board, shots=shots, shot_sources=sources,
                                         models=models, metadata=metadata)
        whole = None  # unconnected, the whole clip is not held
        if output_linked(prompt, unique_id, FRAMES_OUTPUT):  # refused before rendering if large
            whole = ClipFrames(video.plan.total, start.shape[1], start.shape[2], frames_limit_mb << 20,
                               "frames_limit_mb", "the frames output")
            for frame in video.reused_frames():  # as the file holds them
                whole.append(frame[None])
        # No latent previews: the frontend shows a node's previews instead of its outputs and would load them (blob:
        # JPEGs) into this node's <video>, which ./run.sh's CSP refuses: the finished video would never show
        # (docs/comfyui-host.md, "Previews under ./run.sh"). The progress bar still moves with every step.
        steps, rendered = settings.steps, windows - first
        on_progress = progress.step_callback(rendered * steps, preview=False)
        last_window = []

        def write(frames):
            video.write(frames)
            last_window[:] = [frames]
            if whole is not None:
                whole.append(frames)

        def on_step(window, step):
            on_progress(dataclasses.replace(step, index=(window - first) * steps + step.index,
                                            total=rendered * steps))

        try:
            with video:
                generate_long_video(dit, encoders, frames_vae, start, [p.text for p in board], window_length, write,
                                    settings, plan=video.plan, shots=video.shots, resume=video.handover,
                                    on_step=on_step, on_window=video.window_done)
        except NonFiniteOutput as e:  # a LoRA loader wired into the MODEL is the likeliest cause: named first
            raise native_model.blame_patches(e, model) from None
        except BaseException:  # Cancel, a full disk: say where the finished windows are kept
            if video.record.windows:
                progress.show_text(unique_id, f"Magic141 Long Video stopped after {len(video.record.windows)} of "
                                   f"{windows} windows: set resume to {paths.output_relative(video.folder)} to finish "
                                   "it (the finished windows are reused)")
            raise
        name = f"{record['subfolder']}/{record['filename']}" if record["subfolder"] else record["filename"]
        last = last_window[0].float() / 255
        sidecar = paths.output_relative(video.folder)
        return io.NodeOutput(last, name, *paths.video_output(path), last if whole is None else whole.image(), sidecar,
                             ui={"images": [record], "animated": (True,)})  # frames unconnected: the last window


def read_sidecar(resume: str, from_window: int) -> SidecarReader | None:
    """The recorded video `resume` names (its sidecar or MP4, inside the output folder), or None for a new video."""
    if not str(resume).strip():
        if from_window:
            raise ValueError(f"from_window {from_window} re-rolls a recorded video: give its sidecar as resume "
                             "(Long Video's sidecar output), or set from_window to 0 for a new video")
        return None
    return SidecarReader.read(locate_sidecar(paths.output_entry(resume, "resume")), roots=[paths.output_dir()])


NODES = [Magic141LongVideo]
