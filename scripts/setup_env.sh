#!/usr/bin/env bash
# Create or update a virtual environment for the pack (default .venv): torch first (the CPU wheel pinned below, so
# nothing pulls a multi-GB CUDA build), then the runtime requirements, then the test-only ones. MAGIC141_CONSTRAINTS
# may name a pip constraints file of extra pins (the compatibility environment pins transformers 4.5x with it).
# Idempotent: a stamp of the requirement and constraint files makes a second run a no-op.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MAGIC141_VENV:-$ROOT/.venv}"
TORCH_SPEC="${MAGIC141_TORCH:-torch==2.13.0}"
EXTRA="${MAGIC141_CONSTRAINTS:-/dev/null}"
PY="${PYTHON:-python3}"

stamp_of() { cat "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" "$EXTRA" <(echo "$TORCH_SPEC") | sha256sum | cut -c1-16; }
STAMP="$VENV/.magic141-stamp"
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/constraints.txt" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of)" ]; then
  exit 0
fi
echo "[setup] creating/updating $VENV" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" "$TORCH_SPEC"
# The constraints keep every later install (the pack's, ComfyUI's) on the torch just installed and the extra pins.
{ echo "$TORCH_SPEC"; grep -v '^\s*#' "$EXTRA" || true; } > "$VENV/constraints.txt"
"${PIP[@]}" -r "$ROOT/requirements.txt" -c "$VENV/constraints.txt"
"${PIP[@]}" -r "$ROOT/requirements-test.txt" -c "$VENV/constraints.txt"
stamp_of > "$STAMP"
