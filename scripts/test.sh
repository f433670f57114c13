#!/usr/bin/env bash
# The whole test suite, from a fresh clone: sets up .venv if needed, then runs pytest with tests/ as rootdir (so the
# pack's root __init__.py, which needs ComfyUI, is never imported by collection). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
bash "$ROOT/scripts/setup_comfyui.sh"   # upstream ComfyUI for the node and server tests (cached in .host/)
bash "$ROOT/scripts/setup_browser.sh"   # Debian's chromium for the templates-in-a-browser test
cd "$ROOT"
exec "${MAGIC141_VENV:-$ROOT/.venv}/bin/python" -m pytest -c tests/pytest.ini tests "$@"
