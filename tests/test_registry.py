"""Registry metadata: what ComfyUI-Manager and the Comfy Registry read from pyproject.toml and requirements.txt."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFY_CLI = REPO / ".venv-tools" / "bin" / "comfy"


def _project():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirements() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_comfy_node_validate_passes_without_warnings():
    if not COMFY_CLI.is_file():
        pytest.fail(f"comfy-cli is not installed at {COMFY_CLI}; run scripts/setup_tools.sh (scripts/test.sh does)")
    env = {**os.environ, "NO_COLOR": "1"}
    run = subprocess.run([str(COMFY_CLI), "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env=env)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "All validation checks passed successfully" in output and "Warning" not in output, output


def test_dependencies_never_replace_torch_or_downgrade_the_users_environment():
    project = _project()["project"]
    for spec in project["dependencies"] + _requirements():
        name = re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower()
        assert name not in ("torch", "torchvision", "torchaudio"), f"{spec}: ComfyUI brings torch; never list it"
        assert "<" not in spec and "==" not in spec, f"{spec}: an upper cap or pin makes pip downgrade a user's package"
    assert {re.split(r"[<>=]", s)[0] for s in project["dependencies"]} == {re.split(r"[<>=]", s)[0]
                                                                           for s in _requirements()}


def test_registry_fields_are_complete_and_point_at_real_files():
    project = _project()
    comfy = project["tool"]["comfy"]
    assert comfy["requires-comfyui"] == ">=0.3.75"  # the oldest host the compatibility tests run on
    icon = comfy["Icon"]
    assert icon.startswith("https://") and (REPO / icon.split("/main/", 1)[1]).is_file()
    assert {"Repository", "Documentation", "Bug Tracker"} <= set(project["project"]["urls"])
    classifiers = project["project"]["classifiers"]
    assert any(c.startswith("Operating System ::") for c in classifiers)
    assert any(c.startswith("Environment :: GPU ::") for c in classifiers)
    folders = {m["location"].split("/")[2] for m in comfy["Models"]}
    assert folders == {"diffusion_models", "vae", "text_encoders", "clip_vision"} and all(
        m["model_url"].startswith("https://") for m in comfy["Models"])
    ignored = (REPO / ".comfyignore").read_text().split()
    assert {"tests/", "benchmarks/"} <= set(ignored)


def test_registry_name_leaves_out_comfyui_and_the_display_name_stays():
    project = _project()
    assert "comfyui" not in project["project"]["name"].lower()
    assert project["tool"]["comfy"]["DisplayName"] == "Magic141 (Magic 1-For-1) Image-to-Video"


def test_shipped_workflows_name_the_pack_and_version_of_every_node_and_where_each_model_downloads():
    """As ComfyUI's own templates do: properties cnr_id / ver on every node (the frontend and Manager find a
    missing node's pack by them), and on loaders `models` with each listed file's URL and folder."""
    import json

    project = _project()
    urls = {Path(m["location"]).name: (m["model_url"], Path(m["location"]).parent.name)
            for m in project["tool"]["comfy"]["Models"]}
    seen_models = set()
    workflows = sorted((REPO / "example_workflows").glob("*.json"))
    assert workflows
    for path in workflows:
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] == "Reroute":
                continue
            props = node["properties"]
            expected = ((project["project"]["name"], project["project"]["version"])
                        if node["type"].startswith("Magic141") else ("comfy-core", "0.3.75"))
            assert (props.get("cnr_id"), props.get("ver")) == expected, (path.name, node["type"])
            named = [v for v in node.get("widgets_values", []) if isinstance(v, str) and v in urls]
            assert [(m["name"], m["url"], m["directory"]) for m in props.get("models", [])] == \
                [(name, *urls[name]) for name in named], (path.name, node["type"])
            seen_models.update(named)
    assert seen_models == set(urls) - {"llava_llama3_fp16.safetensors"}  # the templates pick the fp8 LLaVA
