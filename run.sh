#!/usr/bin/env bash
# From a fresh clone to Magic141 running in ComfyUI: installs what is missing (.venv with torch and the pack's
# requirements, upstream ComfyUI in .host/), generates the built-in demo models on first use, starts ComfyUI on
# 127.0.0.1 and prints the URL. It installs only what running needs (no test tools) and says what it is doing.
# A second run reuses everything and starts in seconds. Options: see `./run.sh --help` (e.g. --port 8189, --check).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export MAGIC141_SETUP=runtime   # only what running needs: no diffusers / pytest / accelerate (test.sh adds those)
echo "[run] checking the environment (.venv, ComfyUI in .host/; the first run installs them, a few minutes)" >&2
bash "$ROOT/scripts/setup_env.sh"
bash "$ROOT/scripts/setup_comfyui.sh"
exec "${MAGIC141_VENV:-$ROOT/.venv}/bin/python" "$ROOT/scripts/serve.py" "$@"
