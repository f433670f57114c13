"""Hostile and careless inputs on a real ./run.sh server (issue 34): each defect class through a node, named in the
error message, then the server answers at once and runs the next prompt. One server run, one prompt per case
(the unchanged nodes upstream are cached by ComfyUI between them)."""

from __future__ import annotations

import json
import subprocess
import time

import torch
from run_sh_server import CPU_SIZE, api_prompt, mp4s_on_disk, node_id
from safetensors import safe_open
from safetensors.torch import save_file

from magic141_core.demo.models import DEMO_FILES
from magic141_core.runtime.text_file import MAX_PROMPT_BYTES


def _files(server) -> dict[str, str]:
    """A LoRA holding NaN (in models/loras) and the demo transformer as int8 with a map that lists one layer too
    few (in models/diffusion_models); their names."""
    models = server.base / "models"
    (models / "loras").mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(0)
    save_file({"diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight":
               torch.randn(4, 256, generator=g).index_fill(1, torch.tensor([7]), float("nan")),
               "diffusion_model.double_blocks.0.img_attn_qkv.lora_B.weight": torch.randn(768, 4, generator=g)},
              str(models / "loras" / "hostile_nan_lora.safetensors"))
    from magic141_core import load_dit, save_dit
    from magic141_core.weights.int8 import quantize_linears_

    folder, demo = DEMO_FILES["dit"]
    save_dit(quantize_linears_(load_dit(models / folder / demo, torch.float32)), models / folder / "int8_ok.safetensors")
    with safe_open(str(models / folder / "int8_ok.safetensors"), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    (models / folder / "int8_ok.safetensors").unlink()
    qmap = json.loads(meta["magic141_quantization"])
    del qmap["double_blocks.0.img_mlp.fc2"]
    save_file(tensors, str(models / folder / "hostile_int8_map.safetensors"),
              {**meta, "magic141_quantization": json.dumps(qmap)})
    return {"lora": "hostile_nan_lora.safetensors", "int8": "hostile_int8_map.safetensors"}


def _full_disk(server):
    """output/full_disk as a 1 MiB tmpfs with every byte taken (None where this process may not mount one)."""
    folder = server.base / "output" / "full_disk"
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        return None
    with open(folder / "filler.bin", "wb") as f:
        try:
            f.write(b"\0" * (2 << 20))
        except OSError:
            pass
    return folder


def test_each_defect_class_is_named_by_its_node_and_the_server_goes_on(server, object_info):
    names = _files(server)
    disk = _full_disk(server)
    size = {"Magic141ImageToVideo": CPU_SIZE}

    def image_latent(prompt):  # Empty Latent Image (an SD image latent) wired into the sampler
        prompt["900"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}}
        prompt[node_id(prompt, "Magic141Sampler")]["inputs"]["latent"] = ["900", 0]

    cases = [  # (template, overrides, change, node that fails, message)
        ("image_to_video", size, image_latent, "Magic141Sampler",
         "Magic141 Sampler needs a HunyuanVideo video latent [B, 16, T, H/8, W/8]; this is an image latent [1, 4, 6, 8] "
         "(from Empty Latent Image, or VAE Encode with an SD1.5 / SDXL VAE): use Magic141 Image To Video's latent"),
        ("lora_to_video", {**size, "LoraLoaderModelOnly": {"lora_name": names["lora"], "strength_model": 1.0}}, None,
         "Magic141Sampler", "produced non-finite values (NaN in"),
        ("image_to_video", {**size, "Magic141ModelLoader": {"model_name": names["int8"]}}, None, "Magic141ModelLoader",
         f"{names['int8']} holds int8 weights for layers its quantization map does not list, e.g. "
         "['double_blocks.0.img_mlp.fc2']"),
        ("image_to_video", {**size, "Magic141Encode": {"prompt": "x" * (MAX_PROMPT_BYTES + 1)}}, None,
         "Magic141Encode", f"the prompt is {MAX_PROMPT_BYTES + 1} characters long, more than the"),
        ("image_to_video", {**size, "Magic141SaveMP4": {"filename_prefix": "Magic141/a\0b"}}, None, "Magic141SaveMP4",
         "filename_prefix 'Magic141/a\\x00b' holds a control character; it must be a file name"),
        ("image_to_video", {**size, "Magic141SaveMP4": {"filename_prefix": ""}}, None, "Magic141SaveMP4",
         "filename_prefix '' names no file; it must be a file name"),
    ]
    if disk is not None:
        cases.append(("image_to_video", {**size, "Magic141SaveMP4": {"filename_prefix": "full_disk/clip"}}, None,
                      "Magic141SaveMP4", f"could not write clip_00001_.mp4 in {disk}: the disk is full (0 bytes free "
                                         "there; 0 bytes were written before it failed). Nothing was kept"))
    before = mp4s_on_disk(server)
    try:
        for template, overrides, change, node, message in cases:
            prompt, _ = api_prompt(server, object_info, template, **overrides)
            if change is not None:
                change(prompt)
            history = server.wait(server.queue(prompt))
            errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
            assert errors and errors[0]["node_type"] == node, (template, errors)
            assert message in errors[0]["exception_message"], errors[0]["exception_message"]
            if template == "lora_to_video":  # blamed on the LoRA loader, not only on the weight dtype
                assert "Fix: this transformer carries LoRA or other weight patches on 1 weight (e.g. " \
                       "diffusion_model.double_blocks.0.img_attn_qkv.weight) from the LoRA loader(s)" \
                       in errors[0]["exception_message"]
            start = time.time()
            server.get("/system_stats")
            assert time.time() - start < 1.0
        assert mp4s_on_disk(server) == before  # no case wrote a video, not even a partial one
        assert not [p for p in (server.base / "output").rglob("*") if ".partial" in p.name]
        after, _ = api_prompt(server, object_info, "image_to_video", **size, Magic141Sampler={"seed": 77},
                              Magic141SaveMP4={"filename_prefix": "after_hostile"})
        assert server.wait(server.queue(after))["status"]["status_str"] == "success"
    finally:
        if disk is not None:
            subprocess.run(["umount", str(disk)], check=True)
