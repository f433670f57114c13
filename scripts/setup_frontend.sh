#!/usr/bin/env bash
# The newest comfyui-frontend-package the package index offers (1.58 or later), into .frontend-new/ (git-ignored;
# never into the shared environments), for tests/test_browser_frontends.py, which serves it with ComfyUI's
# --front-end-root beside the host's pinned frontend. Static files only (no dependencies, ~120 MB unpacked).
# Idempotent: an install already there is kept; MAGIC141_FRONTEND_UPGRADE=1 replaces it with the newest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${MAGIC141_VENV:-$ROOT/.venv}/bin/python"
TARGET="$ROOT/.frontend-new"
if [ -f "$TARGET/comfyui_frontend_package/static/index.html" ] && [ "${MAGIC141_FRONTEND_UPGRADE:-0}" != 1 ]; then
  exit 0
fi
rm -rf "$TARGET"
# the host's pip constraints may pin the frontend ComfyUI itself uses; this separate copy must not follow them
PIP_CONSTRAINT= "$PY" -m pip install --quiet --no-deps --target "$TARGET" "comfyui-frontend-package>=1.58" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
test -f "$TARGET/comfyui_frontend_package/static/index.html"
echo "[setup] newest frontend for the browser test in .frontend-new/:" \
     "$(basename "$TARGET"/comfyui_frontend_package-*.dist-info .dist-info)" >&2
