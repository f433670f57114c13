"""LoRA: the core's own loading (CLI) in the three formats HunyuanVideo LoRAs are shared in, against ComfyUI's native
LoRA loaders (LoraLoaderModelOnly) on the same tiny weights, on ComfyUI's own HunyuanVideo model and on ours; stacked
LoRAs, strengths, LoRA + int8, and the errors and warnings. In-process against the real upstream ComfyUI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import make_text, run_node
from safetensors.torch import save_file

from magic141_core import Conditioning, load_dit, sample_latent, save_dit, tiny
from magic141_core.weights import CheckpointError, to_diffusers
from magic141_core.dit.loading import random_dit
from magic141_core.weights.lora import apply_lora_, load_loras_, parse_lora_arg, read_lora

NATIVE_TINY = dict(hidden_size=256, num_heads=2, refiner_blocks=2, pooled_dim=768, rope_axes=(16, 56, 56), text_dim=32)
SHAPE = (1, 16, 2, 4, 4)
RANK = 4
# official module -> out rows; fused ones exercise diffusers' split q/k/v, the final adaLN its swapped halves
MODULES = ["double_blocks.0.img_attn_qkv", "double_blocks.0.txt_mlp.fc2", "single_blocks.0.linear1",
           "txt_in.individual_token_refiner.blocks.0.self_attn_qkv", "final_layer.adaLN_modulation.1"]


@pytest.fixture(scope="module")
def files(comfy_base):
    import folder_paths

    loras = comfy_base / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    folder_paths.add_model_folder_path("loras", str(loras), is_default=True)
    dit_path = comfy_base / "models" / "diffusion_models" / "lora_base.safetensors"
    model = random_dit(tiny(**NATIVE_TINY), seed=21)
    save_dit(model, dit_path)
    return {"dit": dit_path, "loras": loras, "model": model}


def pairs(model, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A random (down, up) pair per module of MODULES, large enough to change the output clearly."""
    g = torch.Generator().manual_seed(seed)
    linears = dict(model.named_modules())
    return {m: (torch.randn(RANK, linears[m].in_features, generator=g) * 0.05,
                torch.randn(linears[m].out_features, RANK, generator=g) * 0.05) for m in MODULES}


def write_lora(folder, name: str, fmt: str, model, seed: int) -> str:
    """One LoRA in `fmt`: official (diffusion-pipe), kohya (musubi, with alpha) or diffusers (split q/k/v)."""
    sd = {}
    for module, (down, up) in pairs(model, seed).items():
        if fmt == "official":
            sd |= {f"diffusion_model.{module}.lora_A.weight": down, f"diffusion_model.{module}.lora_B.weight": up}
        elif fmt == "kohya":  # alpha = rank / 2: the file's up is doubled so the update is the same
            base = "lora_unet_" + module.replace(".", "_")
            sd |= {f"{base}.lora_down.weight": down, f"{base}.lora_up.weight": up * 2,
                   f"{base}.alpha": torch.tensor(RANK / 2)}
        else:  # diffusers: each fused linear's rows as separate modules (to_diffusers splits them the same way)
            for target, up_part in to_diffusers({"img_in.proj.weight": model.img_in.proj.weight,
                                                 f"{module}.weight": up}).items():
                if target.startswith("x_embedder"):
                    continue
                base = "transformer." + target.removesuffix(".weight")
                sd |= {f"{base}.lora_A.weight": down.clone(), f"{base}.lora_B.weight": up_part.contiguous()}
    save_file(sd, folder / name)
    return name


def cond() -> Conditioning:
    reference = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    return Conditioning(make_text(1, 9, [6], 32, 768, seed=4), reference=reference)


def core_result(files, loras, int8=False) -> torch.Tensor:
    dit = load_dit(files["dit"], dtype=torch.float32, int8=int8)
    load_loras_(dit, [(files["loras"] / name, strength) for name, strength in loras])
    return sample_latent(dit, cond(), SHAPE, steps=2, seed=9) / 0.476986


def native_result(pack, model, loras) -> torch.Tensor:
    import nodes

    for name, strength in loras:
        (model,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, strength)
    latent = {"samples": torch.zeros(SHAPE)}
    return run_node(pack.NODE_CLASS_MAPPINGS["Magic141Sampler"], model=model, conditioning=cond(), latent=latent,
                    steps=2, shift=5.0, guidance=1.0, seed=9)[0]["samples"]


def comfy_model(files):
    import nodes

    return nodes.UNETLoader().load_unet(files["dit"].name, "default")[0]


def our_model(pack, files):
    return run_node(pack.NODE_CLASS_MAPPINGS["Magic141ModelLoader"], model_name=files["dit"].name,
                    weight_dtype="fp32")[0]


@pytest.mark.parametrize("fmt", ["official", "kohya"])
def test_stacked_loras_match_comfyui_native_lora_loaders(pack, files, fmt):
    loras = [(write_lora(files["loras"], f"{fmt}_a.safetensors", fmt, files["model"], 1), 0.7),
             (write_lora(files["loras"], f"{fmt}_b.safetensors", fmt, files["model"], 2), -0.3)]
    ours = core_result(files, loras)
    assert (ours - core_result(files, [])).abs().max() > 1e-2  # the LoRAs really change the video
    assert (native_result(pack, our_model(pack, files), loras) - ours).abs().max() <= 1e-5  # ours behind the MODEL
    on_comfy_dit = (native_result(pack, comfy_model(files), loras) - ours).abs().max()
    if fmt == "official":  # ComfyUI's own HunyuanVideo DiT maps these keys too
        assert on_comfy_dit <= 1e-5
    else:  # ComfyUI 0.3.75 maps kohya names from its internal ones: `txt_mlp_fc2` is "not loaded" there
        assert on_comfy_dit > 1e-3


def test_diffusers_lora_equals_the_same_lora_in_official_names(files):
    """diffusers' split q/k/v (and swapped final adaLN halves) land on the right rows of the fused official linears."""
    official = write_lora(files["loras"], "same_official.safetensors", "official", files["model"], 3)
    diffusers = write_lora(files["loras"], "same_diffusers.safetensors", "diffusers", files["model"], 3)
    assert (core_result(files, [(diffusers, 0.7)]) - core_result(files, [(official, 0.7)])).abs().max() <= 1e-5


def test_lora_on_int8_is_a_float_branch_within_int8_tolerance(files):
    name = write_lora(files["loras"], "int8_a.safetensors", "official", files["model"], 4)
    merged = core_result(files, [(name, 0.7)])
    int8 = core_result(files, [(name, 0.7)], int8=True)
    without = core_result(files, [], int8=True)
    err = (int8 - merged).abs().max()
    assert err < 0.05 * merged.abs().max() and err < 0.5 * (without - merged).abs().max()
    dit = load_dit(files["dit"], dtype=torch.float32, int8=True)
    apply_lora_(dit, read_lora(files["loras"] / name, dit), 0.7)
    layer = dit.double_blocks[0].img_attn_qkv
    assert type(layer).__name__ == "Int8Linear" and len(layer.magic141_lora) == 1  # still int8, with a float branch


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_lora_on_int8_layers_adds_exactly_strength_times_the_low_rank_update(files, fmt):
    """On an int8 model every adapted layer's output moves by exactly strength x (alpha / r) x B A applied to its input
    (the LoRA formula written out, from the pairs the file was made of; kohya's alpha is r / 2, diffusers' updates
    are split into q / k / v rows and norm_out's halves swapped). Bound: 1e-5 of the update, fp32 (measured 8e-7);
    a wrong alpha / r or unswapped halves is off by the update itself."""
    name = write_lora(files["loras"], f"int8_{fmt}.safetensors", fmt, files["model"], 5)
    dit = load_dit(files["dit"], dtype=torch.float32, int8=True)
    layers = dict(dit.named_modules())
    assert type(layers["double_blocks.0.img_attn_qkv"]).__name__ == "Int8Linear"
    g = torch.Generator().manual_seed(6)
    inputs = {m: torch.randn(3, layers[m].in_features, generator=g) for m in MODULES}
    with torch.no_grad():
        before = {m: layers[m](inputs[m]) for m in MODULES}
        apply_lora_(dit, read_lora(files["loras"] / name, dit), 0.7)
        for module, (down, up) in pairs(files["model"], 5).items():
            moved = layers[module](inputs[module]) - before[module]
            want = 0.7 * (inputs[module] @ down.T) @ up.T
            assert (moved - want).abs().max() <= 1e-5 * want.abs().max(), module


def test_lora_errors_and_warnings(files):
    dit = load_dit(files["dit"], dtype=torch.float32)
    sd15 = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4)}
    save_file(sd15, files["loras"] / "sd15_lora.safetensors")
    with pytest.raises(CheckpointError, match="sd15_lora.safetensors names no module of this transformer .* a LoRA "
                                              "for another architecture"):
        read_lora(files["loras"] / "sd15_lora.safetensors", dit)
    save_file({"img_in.proj.weight": torch.zeros(1)}, files["loras"] / "not_a_lora.safetensors")
    with pytest.raises(CheckpointError, match="not_a_lora.safetensors is not a LoRA"):
        read_lora(files["loras"] / "not_a_lora.safetensors", dit)
    wrong = {"diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight": torch.zeros(4, 3072),
             "diffusion_model.double_blocks.0.img_attn_qkv.lora_B.weight": torch.zeros(9216, 4)}
    save_file(wrong, files["loras"] / "13b_lora.safetensors")
    with pytest.raises(CheckpointError, match="trained for a different model size"):
        read_lora(files["loras"] / "13b_lora.safetensors", dit)
    mixed = {**sd15, "diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight": torch.zeros(4, 256),
             "diffusion_model.double_blocks.0.img_attn_qkv.lora_B.weight": torch.zeros(768, 4)}
    save_file(mixed, files["loras"] / "mixed.safetensors")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("magic141").addHandler(handler)
    try:
        assert len(read_lora(files["loras"] / "mixed.safetensors", dit)) == 1
    finally:
        logging.getLogger("magic141").removeHandler(handler)
    assert any("mixed.safetensors: 1 of its 2 LoRA entries name modules this transformer does not have"
               in r.getMessage() for r in records)


@pytest.mark.parametrize("text, expected", [("a.safetensors", ("a.safetensors", 1.0)),
                                            ("d/a.safetensors:0.7", ("d/a.safetensors", 0.7)),
                                            ("a.safetensors:-0.3", ("a.safetensors", -0.3)),
                                            ("C:/x/a.safetensors", ("C:/x/a.safetensors", 1.0))])
def test_parse_lora_arg(text, expected):
    path, strength = parse_lora_arg(text)
    assert (str(path), strength) == expected



# ------------------------------------------------------------------------------------------ ModelSave round trip
def test_our_comfy_key_map_is_comfyuis_own_renaming_and_inverts_it(comfy_base):
    import comfy.supported_models

    from magic141_core.weights.comfy_keys import comfy_to_official, official_to_comfy

    sd = random_dit(tiny(guidance_embed=True, text_guidance_embed=True)).state_dict()
    config = comfy.supported_models.HunyuanVideoI2V({"image_model": "hunyuan_video", "in_channels": 33})
    host = sorted(config.process_unet_state_dict(dict(sd)))
    norm = "weight" if any(k.endswith("norm.query_norm.weight") for k in host) else "scale"  # 0.30 vs 0.3.x
    assert host == sorted(official_to_comfy(k, norm) for k in sd)
    assert all(comfy_to_official(official_to_comfy(k, n)) == k for k in sd for n in ("scale", "weight"))


def test_modelsave_checkpoints_load_in_our_loader(pack, files):
    import folder_paths
    import nodes
    from comfy_extras.nodes_model_merging import ModelSave
    from safetensors import safe_open

    out = Path(folder_paths.get_output_directory()) / "diffusion_models"
    ModelSave().save(comfy_model(files), "diffusion_models/resaved_comfy")  # ComfyUI's internal names
    lora = write_lora(files["loras"], "save_lora.safetensors", "official", files["model"], 6)
    (with_lora,) = nodes.LoraLoaderModelOnly().load_lora_model_only(our_model(pack, files), lora, 0.7)
    ModelSave().save(with_lora, "diffusion_models/resaved_ours")  # our official names, the LoRA merged in
    comfy_file, ours_file = (next(out.glob(f"{stem}_*.safetensors")) for stem in ("resaved_comfy", "resaved_ours"))
    with safe_open(comfy_file, "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith("model.model.") for k in keys) and "model.model.double_blocks.0.img_attn.qkv.weight" in keys

    original = core_result(files, [])
    folder = files["dit"].parent
    for path in (comfy_file, ours_file):
        (folder / path.name).write_bytes(path.read_bytes())
    reloaded = our_model(pack, {"dit": folder / comfy_file.name})  # Magic141 Model Loader
    latent = run_node(pack.NODE_CLASS_MAPPINGS["Magic141Sampler"], model=reloaded, conditioning=cond(),
                      latent={"samples": torch.zeros(SHAPE)}, steps=2, shift=5.0, guidance=1.0, seed=9)[0]
    # identical weights read from two files (their data at other offsets, so other CPU kernels may run) agree to fp32
    # rounding: 1.3e-6 seen on values up to ~6
    assert (latent["samples"] - original).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="LoRAs or other weight patches on this MODEL would be lost"):
        run_node(pack.NODE_CLASS_MAPPINGS["Magic141SaveInt8"], model=with_lora, filename="never_written")
    merged = load_dit(folder / ours_file.name, dtype=torch.float32)  # the core / CLI loader
    got = sample_latent(merged, cond(), SHAPE, steps=2, seed=9) / 0.476986
    assert (got - core_result(files, [(lora, 0.7)])).abs().max() <= 1e-5


# ------------------------------------------------------------------------------------------------------------ CLI
def test_cli_generate_applies_stacked_loras_and_names_a_wrong_one(comfy_base, demo_models, tmp_path):
    import os
    import subprocess
    import sys

    from comfyui_env import COMFYUI, REPO

    from magic141_core.demo.models import demo_dit_config
    from PIL import Image

    from magic141_core.video.mp4 import read_mp4

    def cli(*args):
        env = {**os.environ, "PYTHONPATH": str(REPO), "MAGIC141_COMFYUI": str(COMFYUI)}
        return subprocess.run([sys.executable, "-m", "magic141_core", *map(str, args)], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=600)

    demo = random_dit(demo_dit_config())
    g = torch.Generator().manual_seed(0)
    strong = {"diffusion_model.final_layer.linear.lora_A.weight": torch.randn(2, 256, generator=g),
              "diffusion_model.final_layer.linear.lora_B.weight": torch.randn(64, 2, generator=g)}
    save_file(strong, tmp_path / "strong.safetensors")
    write_lora(tmp_path, "kohya.safetensors", "kohya", demo, 7)
    save_file({"lora_unet_down_blocks_0_proj_in.lora_down.weight": torch.zeros(4, 320),
               "lora_unet_down_blocks_0_proj_in.lora_up.weight": torch.zeros(320, 4)}, tmp_path / "sd15.safetensors")
    y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    start = torch.stack([x, y * (1 - x), (x - 0.7).abs() < 0.15], dim=-1).float()
    Image.fromarray((start * 255).byte().numpy()).save(tmp_path / "start.png")
    common = ["generate", "--image", "start.png", "--prompt", "waves", "--frames", 5, "--resolution", "64x48",
              "--demo-dir", comfy_base / "models"]
    with_loras = cli(*common, "--out", "lora.mp4", "--lora", "strong.safetensors:0.7",
                     "--lora", "kohya.safetensors:-0.3")
    assert with_loras.returncode == 0, with_loras.stderr
    # the demo's weights hold the start image in every frame (test_cli: correlation > 0.9); the LoRAs break that
    blocks = [torch.nn.functional.avg_pool2d(f.permute(2, 0, 1)[None], 8).flatten()
              for f in (start, torch.from_numpy(read_mp4(tmp_path / "lora.mp4")[0][-1]).float() / 255)]
    assert torch.corrcoef(torch.stack(blocks))[0, 1] < 0.5
    wrong = cli(*common, "--out", tmp_path / "x.mp4", "--lora", "sd15.safetensors")
    lines = wrong.stderr.strip().splitlines()
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "sd15.safetensors names no module of this transformer" in lines[-1]
