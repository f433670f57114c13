#!/usr/bin/env bash
# Create or update the pack's virtual environment (.venv): torch first (the CPU wheel pinned below, so nothing
# pulls a multi-GB CUDA build), then the runtime requirements, then the test-only ones. Idempotent: a stamp of the
# requirement files makes a second run a no-op.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MAGIC141_VENV:-$ROOT/.venv}"
TORCH_SPEC="${MAGIC141_TORCH:-torch==2.13.0}"
PY="${PYTHON:-python3}"

stamp_of() { cat "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" <(echo "$TORCH_SPEC") | sha256sum | cut -c1-16; }
STAMP="$VENV/.magic141-stamp"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of)" ]; then
  exit 0
fi
echo "[setup] creating/updating $VENV" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" "$TORCH_SPEC"
# The constraint keeps every later install on the torch just installed.
echo "$TORCH_SPEC" > "$VENV/torch-constraint.txt"
"${PIP[@]}" -r "$ROOT/requirements.txt" -c "$VENV/torch-constraint.txt"
"${PIP[@]}" -r "$ROOT/requirements-test.txt" -c "$VENV/torch-constraint.txt"
stamp_of > "$STAMP"
