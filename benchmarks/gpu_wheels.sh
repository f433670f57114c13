#!/usr/bin/env bash
# The Python packages benchmarks/gpu_check.py needs that the lent GPU machine lacks, as wheels in .whl/ (ignored by
# git; the device tool carries it). Run HERE, where pip reaches the package index: the GPU machine reaches nothing.
# That machine has Python 3.12, torch (CUDA), transformers, safetensors, einops, numpy, pillow and tqdm
# (/work/.library/device/KINDS.md); it lacks these, all pure Python except imageio-ffmpeg's ffmpeg binary:
#   diffusers 0.39.0      the reference DiT and VAE (its huggingface-hub<2 bound holds the machine's hub 1.x)
#   optimum-quanto 0.2.7  int8 weights
#   importlib_metadata    a requirement of diffusers
#   imageio-ffmpeg        imported by magic141_core.video.mp4 (the whole-clip stage)
# docs/performance.md has the one command that installs them there and runs the check.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p "$ROOT/.whl"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$ROOT/.whl" diffusers==0.39.0 optimum-quanto==0.2.7 importlib_metadata==8.7.0 imageio-ffmpeg==0.6.0
ls -l "$ROOT/.whl"
du -sh "$ROOT/.whl"
