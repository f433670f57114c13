"""Shared fixtures: tiny random models (the diffusers tester-config idea), seeded inputs, and reference builders.
Also two session-end checks that fail the run: a process the tests started that is still alive (orphans included),
and a skip that `allowed_skips` in pytest.ini does not list."""

from __future__ import annotations

import fnmatch
import gc
import sys

import processes
import pytest
import torch

from magic141_core import Conditioning, TextConditioning, tiny
from magic141_core.dit.loading import random_dit


def make_text(batch: int = 1, length: int = 10, valid=None, dim: int = 32, pooled_dim: int = 16, seed: int = 0):
    """Random text conditioning; `valid` lists each sample's number of real tokens (the rest is padding)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for i, n in enumerate(valid or [length] * batch):
        mask[i, :n] = 1
    return TextConditioning(
        torch.randn(batch, length, dim, generator=g), mask, torch.randn(batch, pooled_dim, generator=g)
    )


def live_tensor_bytes() -> int:
    """Bytes of every CPU tensor storage Python still holds (each storage once, views included), after a garbage
    collection: what a leak in our code keeps alive, counted exactly, where a process's RSS moves by megabytes with
    the allocator. (A leak inside torch's C++ would not show here; the benchmarks measure RSS.)"""
    gc.collect()
    seen, total = set(), 0
    for obj in gc.get_objects():
        if type(obj) is torch.Tensor or type(obj) is torch.nn.Parameter:
            if obj.device.type != "cpu" or obj.is_sparse:
                continue
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


@pytest.fixture(autouse=True)
def same_cpu_everywhere(monkeypatch):
    """Every in-process test sees the same CPU, one without native half-precision units (AVX2-class x86: bf16 / fp16
    weights compute in fp32, int8 layers take the dequantize branch), whatever machine runs the suite, so a test
    means the same on every CI machine. The other branches are forced by the tests that cover them (test_dit,
    test_vae, test_quant, test_precision); subprocess and server tests see the real CPU."""
    import magic141_core.runtime.device  # noqa: F401  (the pack loaded as ComfyUI loads it has its own copy)

    for name, module in list(sys.modules.items()):
        if name.endswith("magic141_core.runtime.device"):
            monkeypatch.setattr(module, "cpu_half_is_fast", lambda dtype: False)


@pytest.fixture
def tiny_config():
    return tiny()


@pytest.fixture
def tiny_dit(tiny_config):
    return random_dit(tiny_config, seed=1)


@pytest.fixture
def tiny_cond():
    reference = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    return Conditioning(positive=make_text(valid=[7], seed=2), negative=make_text(valid=[4], seed=3), reference=reference)


@pytest.fixture
def count_forwards():
    """Wrap a model's forward to count calls and record the batch size of each."""

    def wrap(model):
        calls = []
        original = model.forward

        def counted(x, *args, **kwargs):
            calls.append(x.shape[0])
            return original(x, *args, **kwargs)

        model.forward = counted
        return calls

    return wrap


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory):
    """ComfyUI imported in-process with its folders in a temporary base; returns that base."""
    from comfyui_env import import_comfy

    base = tmp_path_factory.mktemp("comfy_base")
    import_comfy(base)
    return base


@pytest.fixture(scope="session")
def demo_models(comfy_base):
    """The built-in demo model files (VAE and SD1.5-format image model included, as ./run.sh writes them), written once per session into the in-process ComfyUI's
    models folder; the server, CLI and run-command tests reuse the same folder."""
    from comfyui_env import COMFYUI

    from magic141_core.demo.models import write_demo_models

    tokenizers = COMFYUI / "comfy" / "text_encoders" / "llama_tokenizer", COMFYUI / "comfy" / "sd1_tokenizer"
    return write_demo_models(comfy_base / "models", *tokenizers, include_image_model=True)


@pytest.fixture(scope="session")
def pack(comfy_base):
    """The pack loaded as ComfyUI loads it (root __init__.py, relative imports)."""
    from comfyui_env import load_pack

    return load_pack()


HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}


def run_node(node_class, **inputs):
    """Run a node the way ComfyUI's executor does, with keyword inputs (the hidden ones it declares by their V1
    names: prompt, extra_pnginfo, unique_id). V1: instantiate, call FUNCTION. V3: a locked clone of the class with `hidden` set,
    its classmethod `execute`; the result as a V1 node gives it (the outputs tuple, or {"ui", "result"})."""
    if not hasattr(node_class, "GET_SCHEMA"):
        return getattr(node_class(), node_class.FUNCTION)(**inputs)
    from comfy_api.internal import lock_class, shallow_clone_class
    from comfy_api.latest._io import HiddenHolder

    clone = shallow_clone_class(node_class)
    hidden = {h.name for h in node_class.GET_SCHEMA().hidden or []}  # Hidden.unique_id.name == "unique_id", ...
    clone.hidden = HiddenHolder.from_dict({HIDDEN[k]: inputs.pop(k) for k in list(inputs) if k in hidden})
    out = node_class.execute.__func__(lock_class(clone), **inputs)
    return tuple(out.args) if out.ui is None else {"ui": out.ui, "result": tuple(out.args)}


@pytest.fixture(scope="session")
def server(tmp_path_factory, comfy_base, demo_models):
    """ComfyUI started by ./run.sh itself (shared by test_server_templates.py and test_server_cancel.py), on a base
    folder whose models/ is the session's demo files (what run.sh's serve.py writes on first use: the same
    `write_demo_models`, so nothing is generated twice)."""
    import numpy as np
    from comfy_server import ComfyServer
    from PIL import Image

    base = tmp_path_factory.mktemp("comfy_server")
    (base / "models").symlink_to(comfy_base / "models", target_is_directory=True)
    (base / "input" / "magic141_priors").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("example.png", "other.png", "magic141_priors/a.png", "magic141_priors/b.jpg"):
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(base / "input" / name)
    srv = ComfyServer(base, run_sh=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def object_info(server):
    return server.get("/object_info")


# ---- session-end checks -------------------------------------------------------------------------------------------
def pytest_addoption(parser):
    parser.addini("allowed_skips", type="linelist", default=[],
                  help="`<test id pattern> | <reason>`: the only skips that do not fail the run")


def pytest_configure(config):
    config.pluginmanager.register(SessionChecks(config), "magic141-session-checks")


class SessionChecks:
    """Fails the run (exit status 1, with a report at the end) when a test was skipped that `allowed_skips` does not
    list, or when a process the tests started is still alive once the session is over (it is then killed)."""

    LEFTOVER_GRACE_S = 60  # a server stopped in the last teardown may still be exiting; that never takes minutes

    def __init__(self, config):
        self.token = processes.mark_session()
        self.allowed = [line.split("|", 1)[0].strip() for line in config.getini("allowed_skips") if "|" in line]
        self.problems: list[str] = []

    def pytest_runtest_logreport(self, report):
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            if not any(fnmatch.fnmatch(report.nodeid, pattern) for pattern in self.allowed):
                self.problems.append(f"skipped, and not in allowed_skips (tests/pytest.ini): {report.nodeid}: {reason}")

    def pytest_sessionfinish(self, session):
        left = processes.wait_gone(processes.started_by_session(self.token), self.LEFTOVER_GRACE_S)
        self.problems += [f"still running after the session (now killed): pid {pid}: "
                          f"{processes.command_line(pid)[:300]}" for pid in left]
        processes.kill(left)
        if self.problems and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if self.problems:
            terminalreporter.section("the run FAILED its session-end checks (tests/conftest.py)", sep="!", red=True)
            for line in self.problems:
                terminalreporter.line(line, red=True)
