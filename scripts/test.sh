#!/usr/bin/env bash
# The whole test suite, from a fresh clone. Extra arguments go to the main pytest run.
#  1. main:   .venv (transformers 5, newest) + .host = ComfyUI 0.30.0, the newest obtainable here: every test
#             but the `compat_only` ones.
#  2. compat: .venv-compat (transformers 4.57, scripts/compat-constraints.txt) + .host-compat = ComfyUI 0.3.75: the
#             tests marked `compat` (encoders, loading the pack, /object_info, one workflow end to end, memory
#             management). Skip it with MAGIC141_SKIP_COMPAT=1 (CI never does).
#  3. tools:  .venv-tools with comfy-cli, for the registry check (`comfy node validate`) in tests/test_registry.py;
#             Debian's chromium for tests/test_browser.py.
# pytest runs with tests/ as rootdir, so the pack's root __init__.py (which needs ComfyUI) is never collected.
# Either run fails on a skip that tests/pytest.ini's allowed_skips does not list, and on a process the tests started
# that is still running at the end (tests/conftest.py SessionChecks).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
bash scripts/setup_comfyui.sh 0.30.0
bash scripts/setup_tools.sh
bash scripts/setup_browser.sh   # Debian's chromium for the templates-in-a-browser test
bash scripts/setup_frontend.sh  # the newest comfyui-frontend-package, for tests/test_browser_frontends.py
PYTEST=(-m pytest -c tests/pytest.ini tests)
if [ "${MAGIC141_SKIP_COMPAT:-0}" != 1 ]; then
  export_compat=(MAGIC141_VENV="$ROOT/.venv-compat" MAGIC141_HOST="$ROOT/.host-compat" MAGIC141_COMFYUI_VERSION=0.3.75
                 MAGIC141_CONSTRAINTS="$ROOT/scripts/compat-constraints.txt")
  env "${export_compat[@]}" bash scripts/setup_env.sh
  env "${export_compat[@]}" bash scripts/setup_comfyui.sh 0.3.75
  echo "[test] compatibility subset: ComfyUI 0.3.75 + transformers 4.5x" >&2
  env "${export_compat[@]}" "$ROOT/.venv-compat/bin/python" "${PYTEST[@]}" -m "compat or compat_only" -q
  echo "[test] main suite: ComfyUI 0.30.0 + transformers 5" >&2
fi
exec "${MAGIC141_VENV:-$ROOT/.venv}/bin/python" "${PYTEST[@]}" -m "not compat_only" "$@"
