"""The pack on a real upstream ComfyUI server started by ./run.sh: the node registry, every example workflow end to end,
progress, and caching. Models are the built-in demo files (real formats, untrained weights); the video size is reduced
to CPU scale in the prompt, everything else is the shipped workflow."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from comfyui_env import REPO
from PIL import Image
from run_sh_server import CPU_SIZE, OUR_NODES, api_prompt, decode_prompt, error_of, mp4s_on_disk, node_id, outputs_mp4

from magic141_core.demo.models import DEMO_FILES
from magic141_core.video.mp4 import read_mp4, read_mp4_metadata
from scripts.build_workflows import TEMPLATES, template_path
from scripts.workflow_graph import required_downloads


@pytest.mark.compat
def test_object_info_lists_every_node_with_typed_inputs(server, object_info):
    assert OUR_NODES <= set(object_info)
    sampler = object_info["Magic141Sampler"]
    assert sampler["category"] == "Magic141" and sampler["display_name"] == "Magic141 Sampler"
    assert sampler["input"]["required"]["model"][0] == "MODEL"
    assert sampler["output"] == ["LATENT"]
    loader = object_info["Magic141ModelLoader"]["input"]["required"]["model_name"][1]["options"]  # V3 combo
    assert DEMO_FILES["dit"][1] in loader
    templates = server.get("/api/workflow_templates")
    assert {"Image to video", "Text to image to video", "Retrieved image to video", "Prior switch to video",
            "Long video"} <= set(templates["Magic141"])  # the file names, which the frontend shows as titles


@pytest.mark.compat
def test_every_example_workflow_uses_only_known_nodes(object_info):
    for path in sorted((REPO / "example_workflows").glob("*.json")):
        types = {n["type"] for n in json.loads(path.read_text())["nodes"]} - {"Reroute"}  # a frontend-only dot
        assert types <= set(object_info), f"{path.name} uses unknown nodes {types - set(object_info)}"


# sizes only: frame size, clip length (5-frame windows hold one context frame)
SHRUNK = {"Magic141ImageToVideo": CPU_SIZE, "EmptyLatentImage": {"width": 64, "height": 48},
          "Magic141LongVideo": {"resolution": "custom", "width": 64, "height": 48, "window_length": 5,
                                "context_frames": 1, "duration": 3, "unit": "windows"}}


def test_every_shipped_template_runs_from_run_sh_or_names_exactly_its_downloads(server, object_info):
    """Every file in example_workflows/, as shipped (models, prompts, steps, switches), on the server ./run.sh
    started: each one finds every model file it names and writes its MP4, or (the templates for public
    HunyuanVideo weights) is refused naming exactly the files it declares for download, each in the folder the
    declaration gives. The LoRA template's clip is the image-to-video one with red and blue swapped at 0.8 (the
    demo LoRA, through ComfyUI's native loader); the retrieval template picked the demo prior its prompt names."""
    assert {p.name for p in (REPO / "example_workflows").glob("*.json")} == {template_path(k).name for k in TEMPLATES}
    y, x = np.mgrid[0:48, 0:64] / np.array([47.0, 63.0])[:, None, None]  # red left to right, blue the other way
    Image.fromarray((np.stack([x, y, 1 - x], -1) * 255).astype(np.uint8)).save(server.base / "input" / "ramps.png")
    clips = {}
    for name in TEMPLATES:
        prompt, ui = api_prompt(server, object_info, name, **SHRUNK, LoadImage={"image": "ramps.png"})
        downloads = {m["name"]: m["directory"] for m in required_downloads(ui)}
        if downloads:
            status, body = server.post("/prompt", {"prompt": prompt, "client_id": server.client_id})
            assert status == 400, (name, body)
            declared = {str(n["id"]): {m["name"]: m["directory"] for m in n["properties"].get("models", [])}
                        for n in ui["nodes"]}
            missing = {}  # file -> folder, as the node refusing it declares it
            for node, errors in body["node_errors"].items():
                for error in errors["errors"]:
                    assert error["type"] == "value_not_in_list", (name, error)  # nothing else is wrong
                    file = error["extra_info"]["received_value"]
                    missing[file] = declared[node][file]
            assert missing == downloads, (name, missing, downloads)
            for file, folder in missing.items():
                assert file not in server.get(f"/models/{folder}")  # a real model folder, without the file
            continue
        start = time.time()
        history = server.wait(server.queue(prompt, extra_pnginfo={"workflow": ui}))
        print(f"{name}: {history['status']['status_str']} in {time.time() - start:.1f} s (first run, shrunk size)")
        assert history["status"]["status_str"] == "success", (name, history["status"])
        (clips[name],) = outputs_mp4(server, history)
    assert len(clips) >= 6
    plain, lora = (torch.from_numpy(read_mp4(clips[k])[0][-1]).float() / 255 for k in ("image_to_video",
                                                                                          "lora_to_video"))
    swapped = plain.clone()
    swapped[..., [0, 2]] = 0.2 * plain[..., [0, 2]] + 0.8 * plain[..., [2, 0]]
    print(f"LoRA clip vs image to video with red and blue swapped at 0.8: {(lora - swapped).abs().mean():.3f}; "
          f"vs image to video: {(lora - plain).abs().mean():.3f}")
    assert (lora - swapped).abs().mean() < 0.03 < 0.2 < (lora - plain).abs().mean()
    assert "chose dawn_harbour.png (score 1.00); runner-up:" in server.log()  # Retrieve Prior's text, logged


@pytest.mark.compat
def test_image_to_video_workflow_runs_end_to_end(server, object_info):
    prompt, ui = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE)
    before = mp4s_on_disk(server)
    pid = server.queue(prompt, extra_pnginfo={"workflow": ui})
    history = server.wait(pid)
    assert history["status"]["status_str"] == "success", history["status"]
    (video,) = outputs_mp4(server, history)
    frames, fps = read_mp4(video)
    assert frames.shape == (9, 48, 64, 3) and fps == 24.0
    assert json.loads(read_mp4_metadata(video)["workflow"]) == ui
    assert mp4s_on_disk(server) - before == {video.relative_to(server.base)}

    sampler = node_id(prompt, "Magic141Sampler")
    progress = [m["data"] for m in server.messages_for(pid, "progress") if m["data"]["node"] == sampler]
    assert [p["value"] for p in progress] == [1, 2, 3, 4] and progress[-1]["max"] == 4
    decode = node_id(prompt, "Magic141VAEDecode")  # the template's decode reports its chunks
    progress = [m["data"] for m in server.messages_for(pid, "progress") if m["data"]["node"] == decode]
    assert progress and progress[-1]["value"] == progress[-1]["max"]


@pytest.mark.compat
def test_vae_decode_progress_reaches_the_websocket_per_chunk_and_tile(server):
    """5 frames of 96 x 64 in 64 px tiles: 2 x 1 tiles, one temporal chunk each (the full-size demo VAE is slow on a
    CPU; the core's chunk count per decode is tested in test_vae.py): 2 steps."""
    pid = server.queue(decode_prompt(96, 64, 5, tile_size=64))
    history = server.wait(pid)
    assert history["status"]["status_str"] == "success", history["status"]
    assert len(history["outputs"]["4"]["images"]) == 5
    progress = [(m["data"]["value"], m["data"]["max"]) for m in server.messages_for(pid, "progress")
                if m["data"]["node"] == "3"]
    assert progress == [(1, 2), (2, 2)]


def test_text_to_image_to_video_workflow_runs_end_to_end(server, object_info):
    prompt, ui = api_prompt(server, object_info, "text_to_image_to_video", Magic141ImageToVideo=CPU_SIZE,
                            EmptyLatentImage={"width": 64, "height": 48}, KSampler={"steps": 2})
    encode, ksampler_decode = node_id(prompt, "Magic141Encode"), node_id(prompt, "VAEDecode")
    assert prompt[encode]["inputs"]["image"] == [ksampler_decode, 0]  # the prior comes through the reroute dot
    history = server.wait(server.queue(prompt, extra_pnginfo={"workflow": ui}))
    assert history["status"]["status_str"] == "success", history["status"]
    (video,) = outputs_mp4(server, history)
    assert read_mp4(video)[0].shape == (9, 48, 64, 3)


def test_retrieval_prior_workflow_runs_end_to_end(server, object_info):
    prompt, _ = api_prompt(server, object_info, "retrieval_prior_to_video", Magic141ImageToVideo=CPU_SIZE,
                           Magic141SaveMP4={"filename_prefix": "Magic141/retrieved"})
    pid = server.queue(prompt)
    history = server.wait(pid)
    assert history["status"]["status_str"] == "success", history["status"]
    assert read_mp4(outputs_mp4(server, history)[0])[0].shape == (9, 48, 64, 3)
    assert (server.base / "input" / "magic141_priors" / ".magic141_index.safetensors").is_file()


def test_prior_switch_runs_only_the_chosen_branch_and_switching_reruns_only_downstream(server, object_info):
    uploaded, _ = api_prompt(server, object_info, "prior_switch_to_video", Magic141ImageToVideo=CPU_SIZE,
                             Magic141PriorSwitch={"use": "uploaded"}, EmptyLatentImage={"width": 64, "height": 48},
                             KSampler={"steps": 2}, Magic141SaveMP4={"filename_prefix": "Magic141/switch"})
    pid = server.queue(uploaded)
    assert server.wait(pid)["status"]["status_str"] == "success"
    executed = {m["data"]["node"] for m in server.messages_for(pid, "executing") if m["data"]["node"]}
    assert node_id(uploaded, "KSampler") not in executed  # lazy: the generated branch never ran
    assert node_id(uploaded, "Magic141RetrievePrior") not in executed

    retrieved = json.loads(json.dumps(uploaded))
    retrieved[node_id(retrieved, "Magic141PriorSwitch")]["inputs"]["use"] = "retrieved"
    pid = server.queue(retrieved)
    assert server.wait(pid)["status"]["status_str"] == "success"
    executed = {m["data"]["node"] for m in server.messages_for(pid, "executing") if m["data"]["node"]}
    cached = set(server.messages_for(pid, "execution_cached")[0]["data"]["nodes"])
    loaders = {node_id(retrieved, t) for t in ("VAELoader", "Magic141ModelLoader", "Magic141EncoderLoader",
                                               "LoadImage")}
    assert not (loaders & executed) and node_id(retrieved, "KSampler") not in executed
    assert node_id(retrieved, "Magic141RetrievePrior") in executed | cached  # (cached: an earlier test ran it)
    assert {node_id(retrieved, t) for t in ("Magic141PriorSwitch", "Magic141Encode", "Magic141Sampler")} <= executed


def test_long_video_writes_the_chained_windows_and_gives_the_whole_clip_to_native_nodes(server, object_info):
    """The template (shrunk), with Long Video's VIDEO (read from the MP4) into native Get Video Components and its
    whole-clip IMAGE output (frames, appended after the older outputs), each into native Preview Image: both carry
    every frame of the MP4. Connected frames over frames_limit_mb stop the run before rendering."""
    prompt, ui = api_prompt(server, object_info, "long_video", Magic141LongVideo={
        "resolution": "custom", "width": 64, "height": 48, "duration": 3, "unit": "windows", "window_length": 5,
        "context_frames": 1, "filename_prefix": "Magic141/long_test"})
    node = node_id(prompt, "Magic141LongVideo")
    assert object_info["Magic141LongVideo"]["output_name"] == ["last_window", "filename", "video", "frames",
                                                               "sidecar"]
    prompt |= {"90": {"class_type": "GetVideoComponents", "inputs": {"video": [node, 2]}},
               "91": {"class_type": "PreviewImage", "inputs": {"images": ["90", 0]}},
               "92": {"class_type": "PreviewImage", "inputs": {"images": [node, 3]}}}
    pid = server.queue(prompt, extra_pnginfo={"workflow": ui})
    history = server.wait(pid)
    assert history["status"]["status_str"] == "success", history["status"]
    (video,) = outputs_mp4(server, history)
    mp4 = read_mp4(video)[0]
    assert mp4.shape == (3 * 4 + 1, 48, 64, 3)
    progress = [m["data"]["value"] for m in server.messages_for(pid, "progress") if m["data"]["node"] == node]
    assert progress[-1] == 3 * 4  # windows x steps
    for preview in ("91", "92"):
        images = history["outputs"][preview]["images"]
        assert len(images) == mp4.shape[0], preview
        last = np.asarray(Image.open(server.base / "temp" / images[-1]["subfolder"] / images[-1]["filename"]))
        assert last.shape == (48, 64, 3) and np.abs(last.astype(float) - mp4[-1]).mean() < 8, preview

    prompt[node]["inputs"]["frames_limit_mb"] = 0  # frames connected, over its limit
    message = error_of(server, prompt)
    assert "frames_limit_mb" in message and "nothing was rendered" in message


def test_long_video_extends_a_loaded_video_and_writes_it_first(server, object_info):
    """Native Load Video into Long Video's start_video, written first (include_start): the MP4 is the clip (96x48,
    fitted to the 64x48 video like the prior: its centre, and the node says so) followed by the window's frames after
    its 5 context frames."""
    from magic141_core.demo.standins import pan_clip
    from magic141_core.video.mp4 import to_uint8, write_mp4

    write_mp4(server.base / "input" / "clip_to_extend.mp4", to_uint8(pan_clip(9, width=96, height=48)), fps=24)
    prompt, _ = api_prompt(server, object_info, "long_video", Magic141LongVideo={
        "resolution": "custom", "width": 64, "height": 48, "duration": 1, "unit": "windows", "window_length": 9,
        "include_start": True, "filename_prefix": "Magic141/extended"})
    node = node_id(prompt, "Magic141LongVideo")
    prompt["80"] = {"class_type": "LoadVideo", "inputs": {"file": "clip_to_extend.mp4"}}
    prompt[node]["inputs"]["start_video"] = ["80", 0]
    history = server.wait(server.queue(prompt))
    assert history["status"]["status_str"] == "success", history["status"]
    (video,) = outputs_mp4(server, history)
    frames = read_mp4(video)[0]
    assert frames.shape == (9 + 9 - 5, 48, 64, 3)
    original = read_mp4(server.base / "input" / "clip_to_extend.mp4")[0][:, :, 16:80]
    error = np.abs(frames[:9].astype(float) - original).mean()  # x264 twice, ComfyUI's decode (chroma upsampling)
    later = np.abs(frames[:8].astype(float) - original[1:]).mean()  # the same against the next frames: 2 px away
    print(f"extended clip vs its source: {error:.2f} grey levels (vs the next frame: {later:.2f})")
    assert error < 6 and error < later / 2
    assert "start clip 96x48 cropped to 64x48 like the prior" in server.log()


def test_changing_only_the_prior_image_reruns_only_downstream_nodes(server, object_info):
    first, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE,
                          Magic141SaveMP4={"filename_prefix": "Magic141/cache_a"})
    server.wait(server.queue(first))
    second, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE,
                           Magic141SaveMP4={"filename_prefix": "Magic141/cache_a"}, LoadImage={"image": "other.png"})
    pid = server.queue(second)
    history = server.wait(pid)
    assert history["status"]["status_str"] == "success"
    cached = set(server.messages_for(pid, "execution_cached")[0]["data"]["nodes"])
    loaders = {node_id(second, t) for t in ("VAELoader", "Magic141ModelLoader", "Magic141EncoderLoader")}
    assert loaders <= cached
    executed = {m["data"]["node"] for m in server.messages_for(pid, "executing") if m["data"]["node"]}
    downstream = {node_id(second, t) for t in ("LoadImage", "Magic141Encode", "Magic141ImageToVideo",
                                               "Magic141Sampler", "Magic141VAEDecode", "Magic141SaveMP4")}
    assert downstream <= executed and not (loaders & executed)
