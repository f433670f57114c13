"""int8 LLaVA encoder memory: peak anonymous RSS while loading ComfyUI's llava_llama3 files with quantize-on-load,
and while loading the pre-quantized file `save_llava` writes, next to the bytes of the Llama's linears in int8 and
in bf16. Quantize-on-load must stay below the bf16 linears: the float Llama is never in memory whole.

Random Llama weights (full: 8 of Llama-3-8B's 32 layers, ~4.5 GB in bf16 with the embeddings; --quick: 8 layers of 2048) in
ComfyUI's file layout, Llama-3's vocabulary from ComfyUI's tokenizer (MAGIC141_COMFYUI, default .host/ComfyUI).
Each load runs in a fresh subprocess; memory is measured as in int8_memory.py (file-backed mmap pages not counted).
Run:  python benchmarks/encoder_int8.py [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from int8_memory import main, measure  # noqa: E402

COMFYUI = Path(os.environ.get("MAGIC141_COMFYUI", REPO / ".host" / "ComfyUI"))
TOKENIZER = COMFYUI / "comfy" / "text_encoders" / "llama_tokenizer"
# Enough layers that one layer's quantization temporaries weigh as little against the model as in the 32-layer one
CONFIGS = {"full": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=8, num_attention_heads=32),
           "quick": dict(hidden_size=2048, intermediate_size=7168, num_hidden_layers=8, num_attention_heads=16),
           "smoke": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2)}


def write_files(folder: Path, size: str) -> tuple[Path, Path]:
    import torch
    from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from magic141_core.weights import save_safetensors
    from magic141_core.demo.models import comfy_llava_files

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER), local_files_only=True)
    config = LlavaConfig(
        text_config=LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=8, head_dim=128,
                                **CONFIGS[size]),
        vision_config=CLIPVisionConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=336, patch_size=14),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16).requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.normal_(0.0, 0.02, generator=generator)
    text, vision = comfy_llava_files(model)
    paths = folder / "llava_llama3_bf16.safetensors", folder / "llava_llama3_vision.safetensors"
    save_safetensors(text, paths[0])
    save_safetensors(vision, paths[1])
    return paths


def child(mode: str, text: str, vision: str, out: str):
    """One load in this (fresh) process; prints a JSON line."""
    import torch

    from magic141_core.text import LlavaSource, load_llava
    from magic141_core.text.loading import save_llava

    source = (LlavaSource(text_encoder=out, tokenizer=TOKENIZER) if mode == "pre-quantized" else
              LlavaSource(text_encoder=text, vision=vision, tokenizer=TOKENIZER))
    from optimum.quanto import qint8  # noqa: F401  imports are not what is measured
    from transformers import LlavaModel  # noqa: F401

    from magic141_core.text.loading import load_tokenizer

    load_tokenizer(TOKENIZER)  # the tokenizer's first load builds caches; the measured load re-reads it
    parts, peak, seconds = measure(lambda: load_llava(source, torch.bfloat16, int8=mode == "quantize-on-load"))
    if mode == "quantize-on-load":
        save_llava(parts.model, out)
    linears = [m for m in parts.model.language_model.modules() if isinstance(m, torch.nn.Linear)]
    int8_bytes = sum(t.numel() * t.element_size() for m in linears for t in m.state_dict().values())
    float_bytes = sum(m.weight.numel() * 2 for m in linears)  # the same linears in bf16
    print(json.dumps({"peak": peak, "seconds": seconds, "int8": int8_bytes, "bf16": float_bytes}))


def run(size: str) -> dict:
    if not TOKENIZER.is_dir():
        raise SystemExit(f"ComfyUI's Llama-3 tokenizer is not at {TOKENIZER}: run ./run.sh once or set MAGIC141_COMFYUI")
    with tempfile.TemporaryDirectory() as tmp:
        text, vision = write_files(Path(tmp), size)
        out = Path(tmp) / "llava_int8.safetensors"

        def sub(mode):
            result = subprocess.run([sys.executable, __file__, "--child", mode, str(text), str(vision), str(out)],
                                    capture_output=True, text=True, check=True)
            return json.loads(result.stdout.strip().splitlines()[-1])

        float_load, on_load, pre = sub("float"), sub("quantize-on-load"), sub("pre-quantized")
        return {
            "encoder peak float load / bf16 linear bytes": float_load["peak"] / on_load["bf16"],
            "Llama linears bf16 GB": on_load["bf16"] / 1e9,
            "encoder int8 / bf16 linear bytes": on_load["int8"] / on_load["bf16"],
            "encoder peak quantize-on-load / bf16 linear bytes": on_load["peak"] / on_load["bf16"],
            "encoder peak quantize-on-load / int8 linear bytes": on_load["peak"] / on_load["int8"],
            "encoder peak pre-quantized / int8 linear bytes": pre["peak"] / pre["int8"],
            "quantize-on-load seconds": on_load["seconds"],
            "pre-quantized seconds": pre["seconds"],
        }


if __name__ == "__main__":
    main(run, child, "8 layers of width 2048 instead of 4096")
