#!/usr/bin/env bash
# comfy-cli in its own environment (.venv-tools), for `comfy node validate` (the registry's check of pyproject.toml
# and its security lint). Kept apart from the pack's venv: its dependencies are not the pack's. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.venv-tools"
SPEC="comfy-cli==1.23.0"
[ -x "$TOOLS/bin/comfy" ] && [ "$(cat "$TOOLS/.stamp" 2>/dev/null)" = "$SPEC" ] && exit 0
echo "[setup] installing $SPEC into $TOOLS" >&2
[ -x "$TOOLS/bin/python" ] || "${PYTHON:-python3}" -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install --disable-pip-version-check -q "$SPEC"
echo "$SPEC" > "$TOOLS/.stamp"
