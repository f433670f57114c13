#!/usr/bin/env bash
# Create or update a virtual environment for the pack (default .venv): torch first (the CPU wheel pinned below, so
# nothing pulls a multi-GB CUDA build), then the runtime requirements, then the test-only ones.
# MAGIC141_SETUP=runtime (what ./run.sh sets) installs only what running needs (no diffusers, pytest, accelerate); a
# full (test) environment satisfies it too. MAGIC141_CONSTRAINTS may name a pip constraints file of extra pins (the
# compatibility environment pins transformers 4.5x with it). Idempotent: stamps of the requirement and constraint
# files make a second run a no-op.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MAGIC141_VENV:-$ROOT/.venv}"
TORCH_SPEC="${MAGIC141_TORCH:-torch==2.13.0}"
EXTRA="${MAGIC141_CONSTRAINTS:-/dev/null}"
PY="${PYTHON:-python3}"
MODE="${MAGIC141_SETUP:-full}"

stamp_of() { cat "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" "$EXTRA" <(echo "$TORCH_SPEC") | sha256sum | cut -c1-16; }
runtime_stamp_of() { cat "$ROOT/requirements.txt" "$EXTRA" <(echo "$TORCH_SPEC") | sha256sum | cut -c1-16; }
STAMP="$VENV/.magic141-stamp"
RUNTIME_STAMP="$VENV/.magic141-runtime-stamp"
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/constraints.txt" ]; then
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of)" ]; then
    exit 0
  fi
  if [ "$MODE" = runtime ] && [ -f "$RUNTIME_STAMP" ] && [ "$(cat "$RUNTIME_STAMP")" = "$(runtime_stamp_of)" ]; then
    exit 0
  fi
fi
echo "[setup] creating/updating $VENV ($MODE environment)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
echo "[setup] installing $TORCH_SPEC (CPU wheel; the longest step on a first run)" >&2
"${PIP[@]}" "$TORCH_SPEC"
# The constraints keep every later install (the pack's, ComfyUI's) on the torch just installed and the extra pins.
{ echo "$TORCH_SPEC"; grep -v '^\s*#' "$EXTRA" || true; } > "$VENV/constraints.txt"
echo "[setup] installing the pack's runtime requirements (requirements.txt)" >&2
"${PIP[@]}" -r "$ROOT/requirements.txt" -c "$VENV/constraints.txt"
runtime_stamp_of > "$RUNTIME_STAMP"
if [ "$MODE" = runtime ]; then
  echo "[setup] runtime environment ready (the tests' extras come with ./scripts/test.sh)" >&2
  exit 0
fi
echo "[setup] installing the test-only requirements (requirements-test.txt)" >&2
"${PIP[@]}" -r "$ROOT/requirements-test.txt" -c "$VENV/constraints.txt"
stamp_of > "$STAMP"
