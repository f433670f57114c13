"""Never lose the user's files, never write outside the allowed folders (issue 22 §1-2, issue 20 §5): every write
goes to a new name (or is refused naming the existing file), Save int8 writes into models/diffusion_models of a
stock ComfyUI layout, output prefixes are checked after resolving symlinks, a killed run's hidden temporary files
are cleaned up, and Hugging Face folders are read with safetensors only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import run_node
from tiny_clip import save_tiny_clip

from magic141_core import save_dit, tiny
from magic141_core.runtime.atomic import make_temp_beside, sweep_stale_temps
from magic141_core.weights import save_safetensors
from magic141_core.dit.loading import random_dit
from magic141_core.video.mp4 import Mp4Writer, read_mp4


# ------------------------------------------------------------------------------------------------ no overwrite
def test_no_writer_replaces_an_existing_file(tmp_path):
    model = tmp_path / "model.safetensors"
    save_safetensors({"w": torch.ones(3)}, model)
    before = model.read_bytes()
    with pytest.raises(FileExistsError, match="model.safetensors already exists"):
        save_dit(random_dit(tiny()), model)
    with pytest.raises(FileExistsError, match="model.safetensors already exists"):
        save_safetensors({"w": torch.zeros(3)}, model)
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "nowhere")  # a dangling link is not a free name either
    with pytest.raises(FileExistsError, match="link.safetensors"):
        save_safetensors({"w": torch.zeros(3)}, tmp_path / "link.safetensors")
    with pytest.raises(FileExistsError, match="model.safetensors"):
        Mp4Writer(model, fps=8)  # refused when created, before any frame is rendered
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.safetensors", "model.safetensors"]


def test_a_kept_partial_video_takes_a_free_name(tmp_path):
    (tmp_path / "long_partial.mp4").write_bytes(b"an earlier partial video")
    writer = Mp4Writer(tmp_path / "long.mp4", fps=8, keep_partial=True)
    writer.write(torch.rand(3, 16, 16, 3))
    assert writer.abort() == tmp_path / "long_partial_2.mp4"
    assert (tmp_path / "long_partial.mp4").read_bytes() == b"an earlier partial video"
    assert read_mp4(tmp_path / "long_partial_2.mp4")[0].shape[0] == 3


def test_temporary_files_of_killed_runs_are_swept_and_live_ones_kept(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from magic141_core.runtime.atomic import make_temp_beside
        print(make_temp_beside(Path({str(tmp_path)!r}) / "clip_00001_.mp4", ".partial.mp4"), flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": str(__import__("comfyui_env").REPO)}
    killed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    live = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        dead_tmp, live_tmp = killed.stdout.readline().strip(), live.stdout.readline().strip()
        killed.send_signal(signal.SIGKILL)  # as a power loss would: no cleanup runs
        killed.wait()
        assert os.path.basename(dead_tmp).startswith(".clip_00001_.") and os.path.isfile(dead_tmp)
        (tmp_path / ".mine.partial.mp4").write_bytes(b"not ours")  # a user's file with a similar name
        mine = make_temp_beside(tmp_path / "next.mp4", ".partial.mp4")  # the next write into that folder
        assert not os.path.exists(dead_tmp) and os.path.isfile(live_tmp)
        assert (tmp_path / ".mine.partial.mp4").exists() and mine.exists()
        assert sweep_stale_temps(tmp_path) == []  # this process is alive: its own temporary file stays
    finally:
        live.kill()
        live.wait()


# ------------------------------------------------------------------------------------ Save int8, stock layout
def test_save_int8_writes_into_diffusion_models_and_never_over_a_model(pack, comfy_base):
    import folder_paths

    roots = [os.path.relpath(p, comfy_base) for p in folder_paths.get_folder_paths("diffusion_models")]
    assert roots == ["models/unet", "models/diffusion_models"]  # ComfyUI's own list, as users have it
    loader, saver = pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"], pack.NODE_CLASS_MAPPINGS["Magic141SaveInt8"]
    unet = comfy_base / "models" / "unet"
    unet.mkdir(exist_ok=True)
    save_dit(random_dit(tiny(), seed=5), unet / "m.safetensors")
    original = (unet / "m.safetensors").read_bytes()
    (model,) = run_node(loader, model_name="m.safetensors", weight_dtype="bf16")
    with pytest.raises(FileExistsError, match=r"'m.safetensors' already exists \(.*models/unet/m.safetensors\)"):
        run_node(saver, model=model, filename="m")
    assert (unet / "m.safetensors").read_bytes() == original  # the float weights are still there
    assert not (comfy_base / "models" / "diffusion_models" / "m.safetensors").exists()  # nor a shadowed copy
    assert run_node(saver, model=model, filename="m_int8")["result"] == ("m_int8.safetensors",)
    assert (comfy_base / "models" / "diffusion_models" / "m_int8.safetensors").is_file()
    assert not (unet / "m_int8.safetensors").exists()
    with pytest.raises(FileExistsError, match="m_int8.safetensors"):
        run_node(saver, model=model, filename="m_int8")
    (int8,) = run_node(loader, model_name="m_int8.safetensors", weight_dtype="bf16", int8="pre-quantized")
    assert type(int8.model.diffusion_model.double_blocks[0].img_attn_qkv).__name__ == "Int8Linear"


# ------------------------------------------------------------------------------------- output folder symlinks
def test_an_output_prefix_through_a_symlink_out_of_the_output_folder_is_refused(pack, comfy_base, tmp_path):
    (comfy_base / "output" / "link").symlink_to(tmp_path, target_is_directory=True)
    save = pack.NODE_CLASS_MAPPINGS["Magic141SaveMP4"]
    try:
        with pytest.raises(ValueError, match="filename_prefix 'link/x' points outside the output folder"):
            run_node(save, images=torch.rand(2, 16, 16, 3), fps=8.0, quality=30, filename_prefix="link/x")
        assert list(tmp_path.iterdir()) == []
        result = run_node(save, images=torch.rand(2, 16, 16, 3), fps=8.0, quality=30, filename_prefix="inside/x")
        record = result["ui"]["images"][0]
        assert (comfy_base / "output" / "inside" / record["filename"]).is_file()
    finally:
        (comfy_base / "output" / "link").unlink()


# ------------------------------------------------------------------------------------ Hugging Face folders
def test_a_retrieval_clip_folder_with_only_pickle_weights_is_refused(tmp_path):
    from magic141_core.priors import ClipEmbedder

    from safetensors.torch import load_file

    folder = save_tiny_clip(tmp_path / "clip")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no usable safetensors weights .*holds only pytorch_model.bin.*read "
                                                "with safetensors only"):
        ClipEmbedder(folder)
    from magic141_core.text import ClipSource

    with pytest.raises(FileNotFoundError, match="holds only pytorch_model.bin, and Hugging Face folders are read with "
                                                "safetensors only"):
        ClipSource(folder=str(folder)).check()  # the encoders' CLIP-L folder: the same rule, the same words
