"""Hostile writes and the CLI (issue 34): nothing non-finite reaches a file from any public writer; a full disk (a
real 1 MiB tmpfs where the test may mount one, plus a simulated ENOSPC that runs everywhere) is named with its folder
and bytes and leaves nothing; and every defect class of test_hostile_inputs.py through the CLI: exit 2, one line,
nothing written."""

from __future__ import annotations

import errno
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from test_cli import cli
from test_hostile_inputs import LAYER, MODULE, _binary, _with_map, lora_pair

from magic141_core import load_dit, save_dit
from magic141_core.runtime.finite import NonFiniteOutput
from magic141_core.video.mp4 import write_mp4
from magic141_core.weights import save_safetensors


# ------------------------------------------------------------------------------------------------ writers
def test_nothing_non_finite_reaches_a_file(tmp_path):
    nan_frames = torch.rand(3, 16, 16, 3).index_fill(0, torch.tensor([1]), float("nan"))
    with pytest.raises(NonFiniteOutput, match="the frames to be written hold NaN or infinite values"):
        write_mp4(tmp_path / "a.mp4", nan_frames, 24)
    with pytest.raises(NonFiniteOutput, match="the frames to be written hold NaN"):
        write_mp4(tmp_path / "b.mp4", np.full((2, 16, 16, 3), np.inf, dtype=np.float32), 24)
    with pytest.raises(ValueError, match="tensor 'w' holds NaN or infinite values; c.safetensors was not written"):
        save_safetensors({"ok": torch.ones(2), "w": torch.tensor([1.0, float("inf")])}, tmp_path / "c.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def full_disk(tmp_path):
    """A real 1 MiB file system (tmpfs), where this process may mount one (root); else the test is skipped (the
    simulated ENOSPC test below runs everywhere)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:100]}); ENOSPC is simulated below")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_names_the_folder_and_bytes_and_keeps_nothing(full_disk):
    noise = np.random.default_rng(0).integers(0, 255, (60, 256, 256, 3), dtype=np.uint8)  # ~4 MB at crf 0
    with pytest.raises(OSError, match=f"could not write clip.mp4 in {full_disk}: the disk is full \\(.* free there; "
                                      "1.0 MiB \\(1048576 bytes\\) were written before it failed\\). Nothing was kept") \
            as error:
        write_mp4(full_disk / "clip.mp4", noise, 24, crf=0)
    assert error.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match="could not write model.safetensors .* the disk is full \\(1.0 MiB \\(1048576 "
                                      "bytes\\) free there; the file needs 4.0 MiB \\(4194304 bytes\\)\\)"):
        save_safetensors({"w": torch.zeros(1 << 20)}, full_disk / "model.safetensors")  # refused before writing
    assert list(full_disk.iterdir()) == []


def test_a_write_failing_with_enospc_part_way_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    """The simulated form (a file system may fill between the free-space check and the write)."""
    import magic141_core.weights.files as files
    from safetensors import SafetensorError

    def fills_up(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(files, "save_file", fills_up)
    with pytest.raises(OSError, match=f"could not write x.safetensors in {tmp_path}: the disk is full \\(.* free "
                                      "there; the file needs 16 bytes\\). Nothing was kept") as error:
        save_safetensors({"w": torch.zeros(4)}, tmp_path / "x.safetensors")
    assert error.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, demo_models):
    """The demo models as explicit CLI arguments, a start image, and one hostile file per defect class."""
    tmp = tmp_path_factory.mktemp("hostile_cli")
    Image.fromarray(np.full((48, 64, 3), 128, dtype=np.uint8)).save(tmp / "start.png")
    _binary(tmp / "binary.txt")
    save_file(lora_pair(torch.randn(4, 256).index_fill(1, torch.tensor([3]), float("nan")), torch.randn(768, 4),
                        key=f"diffusion_model.{MODULE.replace('.0.', '.1.')}"), str(tmp / "nan_lora.safetensors"))
    from magic141_core.weights.int8 import quantize_linears_  # the demo transformer as int8, its map short of a layer

    quantized = quantize_linears_(load_dit(demo_models["dit"], torch.float32))
    save_dit(quantized, tmp / "int8.safetensors")
    with safe_open(str(tmp / "int8.safetensors"), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(tensors, str(tmp / "int8_bad_map.safetensors"), _with_map(meta, lambda q: json.dumps(
        {k: v for k, v in q.items() if k != LAYER})))
    models = ["--vae", demo_models["vae"], "--llava", demo_models["llava"], "--llava-vision", demo_models["vision"],
              "--clip-l", demo_models["clip_l"]]
    return tmp, models, demo_models["dit"]


CLI_CASES = {  # case -> (arguments after the subcommand's common ones, the one line's key words)
    "endless prompts file": (["long", "--windows", 1, "--prompts", "@/dev/zero"],
                             "the prompts file /dev/zero holds more than 1 MiB"),
    "binary prompts file": (["long", "--windows", 1, "--prompts", "@{tmp}/binary.txt"],
                            "binary.txt is not UTF-8 text: line 3, byte 23 (0xff) cannot be decoded"),
    "NaN LoRA": (["generate", "--prompt", "a lake", "--lora", "{tmp}/nan_lora.safetensors"],
                 "nan_lora.safetensors: 'diffusion_model.double_blocks.1.img_attn_qkv.lora_down.weight' holds NaN"),
    "int8 map missing a layer": (["generate", "--prompt", "a lake", "--dit", "{tmp}/int8_bad_map.safetensors"],
                                 "int8_bad_map.safetensors holds int8 weights for layers its quantization map does "
                                 f"not list, e.g. ['{LAYER}']"),
    # the checkpoint writer (its size is known: refused before writing); the MP4 writer's full disk is tested on the
    # core above and through Save MP4 on the server, a whole render costing a minute here
    "full disk": (["quantize", "--out", "{disk}/model_int8.safetensors"], "could not write model_int8.safetensors in "
                  "{disk}: the disk is full (0 bytes free there; the file needs"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_the_cli_refuses_each_defect_class_with_one_line_and_writes_nothing(case, cli_files, request):
    tmp, models, dit = cli_files
    disk = request.getfixturevalue("full_disk") if case == "full disk" else tmp
    if case == "full disk":
        with open(disk / "filler.bin", "wb") as f:  # every byte taken
            with pytest.raises(OSError):
                f.write(b"\0" * (2 << 20))
    args, message = CLI_CASES[case]
    args = [str(a).format(tmp=tmp, disk=disk) for a in args]
    out = disk / "model_int8.safetensors" if args[0] == "quantize" else tmp / f"{case.replace(' ', '_')}.mp4"
    if args[0] == "quantize":
        args += ["--dit", dit]
    else:
        frames = 9 if args[0] == "long" else 5  # a long window must outlast its 5 default context frames
        args += ["--image", tmp / "start.png", "--out", out, "--resolution", "64x48", "--frames", frames, *models]
        if "--dit" not in args:
            args += ["--dit", dit]
    result = cli(*args, cwd=tmp)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in re.split(r"[\r\n]", result.stderr) if line.lower().startswith("error")]
    assert len(lines) == 1 and message.format(disk=disk) in lines[0] and "Traceback" not in result.stderr, \
        result.stderr[-2000:]
    assert not out.exists() and not list(out.parent.glob(".*partial*"))
