"""The README's two commands and the command-line tool: run.sh starts ComfyUI with the pack, the CLI makes videos,
every subcommand has --help, and bad arguments get one line and a non-zero exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import transformers
from comfyui_env import COMFYUI, REPO

from magic141_core.cli import build_parser
from magic141_core.video.mp4 import read_mp4

SUBCOMMANDS = ["generate", "long", "quantize", "index", "retrieve", "bench"]


def cli(*args, cwd=REPO, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAGIC141_COMFYUI": str(COMFYUI)}
    return subprocess.run([sys.executable, "-m", "magic141_core", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def latent_size(image):
    """[H, W, 3] -> the colours of its 8x8 blocks, flattened: what a latent pixel can hold."""
    return F.avg_pool2d(image.permute(2, 0, 1)[None], 8).flatten()


@pytest.fixture(scope="module")
def demo_dir(comfy_base, demo_models):
    return comfy_base / "models"  # the session's demo models: the CLI finds them and generates nothing


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command):
    result = cli(command, "--help")
    assert result.returncode == 0 and "usage: python -m magic141_core " + command in result.stdout


@pytest.mark.parametrize("args, message", [
    (["generate", "--prompt", "x"], "the following arguments are required: --image"),
    (["generate", "--prompt", "x", "--image", "missing.png"], "image not found: missing.png"),
    (["generate", "--prompt", "x", "--image", "i.png", "--frames", "80"], "length must be 4k+1 frames, got 80"),
    (["quantize", "--dit", "nope.safetensors", "--out", "x.safetensors"], "weight file not found"),
    (["quantize", "--llava", "l.safetensors", "--out", "x.safetensors"], "needs --llava-vision"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_give_one_line_and_a_non_zero_exit(args, message, tmp_path):
    (tmp_path / "i.png").write_bytes((COMFYUI / "input" / "example.png").read_bytes())
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_generate_with_the_built_in_demo_writes_a_decodable_mp4(demo_dir, tmp_path):
    from PIL import Image

    out, image = tmp_path / "clip.mp4", tmp_path / "start.png"
    y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    start = torch.stack([x, y * (1 - x), (x - 0.7).abs() < 0.15], dim=-1).float()  # no symmetry, three colours
    Image.fromarray((start * 255).byte().numpy()).save(image)
    result = cli("generate", "--image", image, "--prompt", "a calm lake at dawn",
                 "--frames", 9, "--resolution", "64x48", "--out", out, "--demo-dir", demo_dir)
    assert result.returncode == 0, result.stderr
    assert "ARCHITECTURE DEMO" in result.stderr and f"wrote {out}" in result.stdout
    frames, fps = read_mp4(out)
    assert frames.shape == (9, 48, 64, 3) and fps == 24.0
    # The demo's pass-through weights hold the start image: every frame is it, blurred by the 8x latent. A flipped
    # axis, swapped colour channels or a misplaced reference frame anywhere on the way drops this correlation.
    for frame in torch.from_numpy(frames).float() / 255:
        assert torch.corrcoef(torch.stack([latent_size(start), latent_size(frame)]))[0, 1] > 0.9


def test_generate_fit_pad_keeps_the_whole_image_between_black_bars(demo_dir, tmp_path):
    import numpy as np
    from PIL import Image

    out, image = tmp_path / "padded.mp4", tmp_path / "start.png"
    Image.fromarray(np.full((48, 64, 3), 200, dtype=np.uint8)).save(image)  # 4:3 into a 3:1 video
    result = cli("generate", "--image", image, "--prompt", "a calm lake", "--frames", 5, "--resolution", "96x32",
                 "--fit", "pad", "--out", out, "--demo-dir", demo_dir)
    assert result.returncode == 0, result.stderr
    frames = torch.from_numpy(read_mp4(out)[0]).float() / 255  # [5, 32, 96, 3]
    assert frames.shape == (5, 32, 96, 3)
    # a 42 px wide image centred between 27 px bars (the demo VAE blurs edges over its 8 px latent pixels)
    assert frames[:, :, :16].mean() < 0.15 and frames[:, :, 80:].mean() < 0.15
    assert frames[:, :, 40:56].mean() > 0.6


def test_long_with_a_report_chains_windows(demo_dir, tmp_path):
    out = tmp_path / "long.mp4"
    result = cli("long", "--image", COMFYUI / "input" / "example.png", "--prompts", "waves\nclouds", "--windows", 2,
                 "--frames", 5, "--context-frames", 1, "--resolution", "64x48", "--out", out, "--demo-dir", demo_dir,
                 "--report")
    assert result.returncode == 0, result.stderr
    assert read_mp4(out)[0].shape[0] == 2 * 4 + 1 and "seam jump" in result.stdout
    assert "size: custom: 64x48, 2 windows of 5 frames = 9 frames = 0.4 s at 24 fps" in result.stdout
    # one progress bar over every stage: per window text encode, VAE encode, 4 steps, 1 decode chunk, the write; its
    # total is known from its first draw (the decode chunks are planned before it starts)
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    bars = [line for line in lines if re.search(r"\| *\d+/\d+ \[", line)]
    assert "window 2/2: done" in bars[-1] and {re.search(r" (\d+)/(\d+) \[", b)[2] for b in bars} == {"16"}
    # every other line (our warnings, transformers' and Python's, routed through the log) is whole: none breaks
    # into the bar's line, and the bar never breaks into one
    bar_line = r"(window \d/2: [a-zA-Z ]+: )?\s*\d+%\|[^|]*\| *\d+/16 \[[^]]*\]\s*"
    assert all(re.fullmatch(bar_line, b) for b in bars), bars
    others = [line for line in lines if line not in bars]
    assert others and all(line.startswith("WARNING: ") for line in others), others
    if int(transformers.__version__.split(".")[0]) >= 5:  # its tokenizer warning, on a line of its own
        assert any("tokenizer_class" in line for line in others), others


def test_long_extends_a_video_with_motion_context_and_writes_it_first(demo_dir, tmp_path):
    """--start-video continues an MP4 from its last 5 frames (the default context); --include-start writes the clip
    first, so the file is the whole extended clip; without --image the clip's first frame is the identity anchor.
    A clip of another size is fitted like a start image (centre crop), and the size line says so."""
    from magic141_core.demo.standins import pan_clip
    from magic141_core.video.mp4 import to_uint8, write_mp4

    write_mp4(tmp_path / "wide.mp4", to_uint8(pan_clip(9, width=96, height=48, speed=2)), fps=24)
    out = tmp_path / "extended.mp4"
    result = cli("long", "--start-video", tmp_path / "wide.mp4", "--include-start", "--prompts", "the pan goes on",
                 "--windows", 1, "--frames", 9, "--resolution", "64x48", "--out", out, "--demo-dir", demo_dir,
                 "--report")
    assert result.returncode == 0, result.stderr
    assert "start video: 96x48, fitted (crop) to 64x48 like the start image" in result.stdout
    frames = read_mp4(out)[0]
    assert frames.shape == (9 + 9 - 5, 48, 64, 3)  # the clip, then the window's frames after its 5 context frames
    original = read_mp4(tmp_path / "wide.mp4")[0][:, :, 16:80]  # the centre 64 columns
    assert abs(frames[:9].astype(float) - original).mean() < 2  # the clip again (one more x264 pass)
    assert "seam jump" in result.stdout and "none to measure" not in result.stdout  # the clip -> window seam
    result = cli("long", "--prompts", "on", "--windows", 1, "--demo-dir", demo_dir, cwd=tmp_path)
    assert result.returncode == 2 and "give --image (the start image) or --start-video" in result.stderr


def test_quantize_writes_int8_transformer_and_encoder_files(demo_models, tmp_path):
    from magic141_core.weights import QUANT_METADATA_KEY, read_metadata
    from magic141_core.text.sources import is_int8_llava

    dit = demo_models["dit"]
    result = cli("quantize", "--dit", dit, "--out", tmp_path / "int8.safetensors")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "int8.safetensors").stat().st_size < 0.6 * dit.stat().st_size
    assert QUANT_METADATA_KEY in read_metadata(tmp_path / "int8.safetensors")
    out = tmp_path / "llava_int8.safetensors"
    result = cli("quantize", "--llava", demo_models["llava"], "--llava-vision", demo_models["vision"], "--out", out)
    assert result.returncode == 0, result.stderr
    assert is_int8_llava(out) and f"wrote {out}" in result.stdout


def test_index_and_retrieve(tmp_path):
    import numpy as np
    from PIL import Image
    from tiny_clip import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 60 * i, dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    result = cli("index", "--folder", tmp_path / "images", "--clip", clip)
    assert result.returncode == 0 and "3 images (3 embedded" in result.stdout, result.stderr
    result = cli("retrieve", "--folder", tmp_path / "images", "--clip", clip, "--prompt", "a red car", "--k", 2)
    assert result.returncode == 0 and len(result.stdout.strip().splitlines()) == 2


def test_run_sh_serves_checks_says_a_port_is_held_and_stops_its_comfyui_on_sigterm(tmp_path, demo_dir, pack):
    """The README's ./run.sh, as a script or a service manager drives it: the first serves until SIGTERM to its own
    process (serve.py, after run.sh's exec), which ends the ComfyUI it started (no orphan holding the port); a
    second `./run.sh --check` on the port the first holds says so in one line, starts on a free one, checks the pack's
    nodes and templates, and leaves nothing running either. (Ctrl-C / SIGINT is how every run.sh fixture stops its
    server: comfy_server.py checks the same there.)"""
    import re
    import signal
    import socket
    import time
    import urllib.request

    import processes

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "models").symlink_to(demo_dir, target_is_directory=True)  # demo models already made
    env = {**os.environ, "MAGIC141_VENV": sys.prefix, "MAGIC141_BASE": str(tmp_path / "base")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "first.log"
    with open(log, "wb") as out:
        first = subprocess.Popen(["bash", str(REPO / "run.sh"), "--port", str(port)], stdout=out,
                                 stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 600  # a first start on a busy 2-core machine takes minutes, never ten
        while f"Magic141 is running: http://127.0.0.1:{port}" not in log.read_text(errors="replace"):
            assert first.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        comfyui = processes.descendants(first.pid)  # run.sh exec'd serve.py; its child is ComfyUI
        assert comfyui

        second = subprocess.run(["bash", str(REPO / "run.sh"), "--check", "--port", str(port)], capture_output=True,
                                text=True, env=env, timeout=600)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        held = [line for line in second.stdout.splitlines() if line.startswith(f"port {port} is in use")]
        assert len(held) == 1 and "a ComfyUI already answers there" in held[0], second.stdout
        other = int(re.search(r"starting on port (\d+) instead", held[0])[1])
        assert f"Magic141 is running: http://127.0.0.1:{other}" in second.stdout
        assert f"check: {len(pack.NODE_CLASS_MAPPINGS)} Magic141 nodes" in second.stdout
        assert "Image to video" in second.stdout  # the templates' file names are their titles
        assert (tmp_path / "base" / "custom_nodes" / "Magic141").resolve() == REPO

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=30):
            pass  # the first still serves
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0  # serve.py: 10 s for ComfyUI's own shutdown, then SIGTERM, then SIGKILL
        assert processes.wait_gone(comfyui, 30) == [], [processes.command_line(pid) for pid in comfyui]
        for checked in (port, other):
            with socket.socket() as s, pytest.raises(ConnectionRefusedError):
                s.connect(("127.0.0.1", checked))  # nothing answers on either port any more
    finally:
        if first.poll() is None:
            first.kill()


def test_generate_profile_times_every_stage_and_counts_four_forwards(demo_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    result = cli("generate", "--image", COMFYUI / "input" / "example.png", "--prompt", "a calm lake", "--frames", 5,
                 "--resolution", "64x48", "--out", out, "--demo-dir", demo_dir, "--profile")
    assert result.returncode == 0, result.stderr
    assert read_mp4(out)[0].shape[0] == 5
    lines = result.stdout.splitlines()
    rows = {line[:24].strip(): line[24:].split() for line in lines[lines.index(f"wrote {out}") + 2:]
            if not line.startswith(("DiT forwards", "peak memory"))}
    stages = ["load", "VLM encode", "text encode", "VAE encode", "DiT step 1", "DiT step 2", "DiT step 3",
              "DiT step 4", "decode", "MP4 write"]
    assert [name for name in rows if name not in ("(between stages)", "total")] == stages  # in the order they ran
    seconds = {name: float(values[0]) for name, values in rows.items()}
    assert all(seconds[name] > 0 for name in stages)
    assert sum(seconds[name] for name in stages) + seconds["(between stages)"] == pytest.approx(seconds["total"],
                                                                                              abs=0.01)
    assert "DiT forwards: 4" in lines  # guidance 1: one forward per step, nothing else calls the DiT
    peak = next(line for line in lines if line.startswith("peak memory: "))
    assert float(peak.split()[2]) > 0.1 and "GiB (process RSS)" in peak  # torch and the models at least
def test_run_sh_sets_up_a_runtime_only_environment(tmp_path):
    """run.sh asks setup_env.sh for the runtime environment: requirements.txt only (no diffusers, pytest,
    accelerate), recorded by its own stamp, so a second ./run.sh is a silent no-op (the full test environment's
    stamp satisfies it too)."""
    runtime = {line.split("=")[0].split(">")[0].split("<")[0].strip().lower()
               for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")}
    assert not runtime & {"diffusers", "pytest", "accelerate"}
    assert "export MAGIC141_SETUP=runtime" in (REPO / "run.sh").read_text()
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    stamp = subprocess.run(["bash", "-c", 'cat requirements.txt <(echo torch==2.13.0) | sha256sum | cut -c1-16'],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout
    (venv / ".magic141-runtime-stamp").write_text(stamp)
    (venv / "constraints.txt").write_text("torch==2.13.0\n")
    env = {**os.environ, "MAGIC141_VENV": str(venv), "MAGIC141_SETUP": "runtime", "MAGIC141_TORCH": "torch==2.13.0"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup_env.sh")], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0 and result.stdout == result.stderr == ""


def test_generate_at_the_default_size_makes_the_labelled_draft_on_this_cpu(demo_dir, tmp_path):
    """No --resolution, no --frames: `auto`, which on a CPU is the draft (the 540p bucket at 1/6 of each side, at
    most 17 frames), printed as such; the clip has exactly that size."""
    from PIL import Image

    out, image = tmp_path / "draft.mp4", tmp_path / "wide.png"
    Image.new("RGB", (320, 180), (90, 140, 200)).save(image)  # 16:9 -> the 960x544 bucket -> 160x80
    result = cli("generate", "--image", image, "--prompt", "a calm lake", "--out", out, "--demo-dir", demo_dir)
    assert result.returncode == 0, result.stderr
    assert "size: auto on cpu -> draft: 160x80, 17 frames (81 asked, the draft's cap)" in result.stdout
    assert read_mp4(out)[0].shape == (17, 80, 160, 3)
    parsed = build_parser().parse_args(["long", "--image", "x.png", "--prompts", "a", "--seconds", "60"])
    assert (parsed.resolution, parsed.frames) == ("auto", 81)  # long shares the default: up to 4 windows of 9 on a CPU


def test_generate_names_the_family_it_found_and_a_text_to_video_family_is_refused(demo_dir, tmp_path):
    """A tensors-only 16-channel file named as ComfyUI names HunyuanVideo-I2V v2 is found to be v2 (printed with
    the reason and what it needs) and renders with the family's prompt template; told it is text-to-video, the
    CLI refuses it by name in one line."""
    import dataclasses

    from safetensors.torch import save_file

    from magic141_core.demo.models import DEMO_FILES, demo_dit_config
    from magic141_core.dit.loading import random_dit
    from magic141_core.vae import random_vae, save_vae, tiny_vae

    dit = tmp_path / "hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors"
    config = dataclasses.replace(demo_dit_config(), in_channels=16, image_condition="token_replace",
                                 guidance_embed=True)
    save_file(random_dit(config, seed=3).state_dict(), str(dit))
    save_vae(random_vae(tiny_vae(), seed=3), tmp_path / "vae.safetensors")
    models = {role: demo_dir / folder / name for role, (folder, name) in DEMO_FILES.items()}
    args = ["generate", "--image", COMFYUI / "input" / "example.png", "--prompt", "waves", "--frames", 5,
            "--resolution", "64x48", "--steps", 2, "--guidance", 6, "--dit", dit, "--vae", tmp_path / "vae.safetensors",
            "--llava", models["llava"], "--llava-vision", models["vision"], "--clip-l", models["clip_l"]]
    result = cli(*args, "--out", tmp_path / "v2.mp4")
    assert result.returncode == 0, result.stderr
    assert ("model: HunyuanVideo-I2V v2 (token replace, 16 input channels): 16 input channels and the file name says "
            "image-to-video; not step-distilled: about 50 steps, shift 7, guidance 6") in result.stdout
    assert read_mp4(tmp_path / "v2.mp4")[0].shape == (5, 48, 64, 3)
    result = cli(*args, "--family", "t2v", "--out", tmp_path / "t2v.mp4")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and not (tmp_path / "t2v.mp4").exists()
    assert "is HunyuanVideo text-to-video (text-to-video, 16 input channels) (chosen): it has no image path" in lines[-1]


def test_long_resumes_and_rerolls_from_its_sidecar(demo_dir, tmp_path):
    """`long` writes NAME.m141 beside the MP4; `long --resume NAME.mp4 --from 3 --seed 5 --cfg 1.5 --prompt ...`
    re-renders windows 3 on into a new file, the first two windows the old file's frames bit for bit; flags that shape
    the video are refused with --resume, and so is an edited record (one line, exit 2, before any model loads)."""
    import json

    out = tmp_path / "long.mp4"
    result = cli("long", "--image", COMFYUI / "input" / "example.png", "--prompts", "waves\nclouds\nrain", "--windows",
                 3, "--frames", 5, "--context-frames", 1, "--resolution", "64x48", "--steps", 1, "--out", out,
                 "--demo-dir", demo_dir)
    assert result.returncode == 0, result.stderr
    assert f"sidecar {tmp_path / 'long.m141'}" in result.stdout
    rerolled = tmp_path / "rerolled.mp4"
    result = cli("long", "--resume", out, "--from", 3, "--seed", 5, "--cfg", 1.5, "--prompt", "snow",
                 "--out", rerolled, "--demo-dir", demo_dir)
    assert result.returncode == 0, result.stderr
    assert "window 3/3: done" in result.stderr.replace("\r", "\n") and "window 1/3" not in result.stderr
    old, new = read_mp4(out)[0], read_mp4(rerolled)[0]
    assert old.shape == new.shape == (5 + 4 + 4, 48, 64, 3) and (new[:9] == old[:9]).all()
    record = json.loads((tmp_path / "rerolled.m141" / "record.json").read_text())["record"]
    assert [(w["prompt"], w["seed"], w["cfg"]) for w in record["windows"]] == [("waves", 39, 1.0), ("clouds", 39, 1.0),
                                                                                ("snow", 5, 1.5)]
    result = cli("long", "--resume", out, "--frames", 9, "--demo-dir", demo_dir)
    assert result.returncode == 2 and "--frames: a resumed video keeps the size" in result.stderr
    text = (tmp_path / "long.m141" / "record.json").read_text()
    (tmp_path / "long.m141" / "record.json").write_text(text.replace("clouds", "fog"))
    result = cli("long", "--resume", out, "--from", 2, "--demo-dir", demo_dir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "edited by hand?" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.m141", "long.mp4", "rerolled.m141", "rerolled.mp4"]
