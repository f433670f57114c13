"""The benchmark tooling runs and reports what it measured: the GPU check's tiny CPU configuration (so the script a
lent GPU will run cannot rot), its budget, its FLOP count, and `bench --quick`'s table with every row filled."""

from __future__ import annotations

import json
import time
import os
import subprocess
import sys

import pytest
import torch
from comfyui_env import COMFYUI, REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def run_script(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAGIC141_COMFYUI": str(COMFYUI)}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout)


def test_gpu_check_runs_every_stage_at_the_tiny_configuration_on_cpu(tmp_path):
    from gpu_check import STAGES

    out = tmp_path / "gpu_check.json"
    result = run_script(REPO / "benchmarks" / "gpu_check.py", "--cpu", "--json", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TINY (no CUDA: a smoke run, not figures)" in result.stdout  # it says it is not a GPU figure
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert list(stages) == list(STAGES)
    assert {name: row["status"] for name, row in stages.items()} == {name: "ok" for name in STAGES}, stages
    for name in STAGES:  # the summary table has a line per stage
        assert any(line.startswith(name) for line in result.stdout.splitlines()), name
    # the references ran on the SAME weights: diffusers and ComfyUI agree with ours to fp32 rounding
    for ref in ("diffusers", "comfyui", "vae_diffusers"):
        assert stages[ref]["max |diff|"] < 1e-4 * max(1.0, stages[ref]["max |ours|"]), (ref, stages[ref])
    assert stages["ours"]["attention"] and stages["ours"]["median s"] > 0
    clip = stages["clip"]
    assert clip["DiT forwards"] == 4 and clip["frames"] == 5
    assert {"VAE encode", "DiT step 1", "DiT step 4", "decode"} <= set(clip["stages s"])
    int8 = stages["int8"]
    assert 0.45 < int8["int8 / bf16 weight bytes"] < 0.6
    assert int8["finite"] and int8["max |diff|"] < 0.1 * int8["max |ours|"]  # int8 weights: close, not equal


def test_gpu_check_skips_what_does_not_fit_the_budget(tmp_path):
    out = tmp_path / "gpu_check.json"
    # what is tested is the budget's estimates, not the watchdog (the next test): a grace no loaded machine outlasts,
    # so the 'matmul' stage (no estimate, always run) may take as long as the load makes it (it ran out of the
    # default 15 s at load 8-18 on 2 cores)
    result = run_script(REPO / "benchmarks" / "gpu_check.py", "--cpu", "--budget", "0.01", "--grace", "3600",
                        "--json", out)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = json.loads(out.read_text())["stages"]
    assert stages["matmul"]["status"] == "ok"  # the one stage without an estimate
    for name in ("build", "vae_ours"):
        assert stages[name]["status"] == "skipped" and "left of the budget" in stages[name]["note"]
    for name in ("ours", "diffusers", "clip", "int8"):  # they need the DiT the budget left unbuilt
        assert stages[name]["status"] == "skipped" and "did not complete" in stages[name]["note"]


def test_gpu_check_watchdog_stops_an_overrun_and_keeps_the_report(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = run_script(REPO / "benchmarks" / "gpu_check.py", "--cpu", "--budget", "0", "--grace", "0", "--json", out)
    assert result.returncode == 3, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["stopped"].startswith("deadline: stopped during") and report["stopped"] in result.stdout


def test_forward_flop_count_is_torchs_count():
    from gpu_models import dit_flops, random_dit_on
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from magic141_core import full_13b, tiny

    config = tiny(refiner_blocks=2, guidance_embed=True)
    model = random_dit_on(config, torch.device("cpu"), torch.float32)
    (t, h, w), text = (3, 8, 6), 12
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 16, t, h, w), torch.tensor([900.0]), torch.randn(1, text, config.text_dim),
              torch.ones(1, text), torch.randn(1, config.pooled_dim), reference=torch.randn(1, 16, 1, h, w),
              guidance=torch.tensor([1.0]))
    assert counter.get_total_flops() == dit_flops(config, t * h * w // 4, text)
    # the 540p clip of docs/performance.md: 1.97 PFLOP per forward
    assert dit_flops(full_13b(), 42_840, 402) == pytest.approx(1.97e15, rel=0.02)


def test_random_weights_are_made_in_place_on_the_device():
    from gpu_models import random_dit_on

    from magic141_core import tiny

    a = random_dit_on(tiny(), torch.device("cpu"), torch.bfloat16, seed=3)
    b = random_dit_on(tiny(), torch.device("cpu"), torch.bfloat16, seed=3)
    params = list(a.parameters())
    assert all(p.dtype == torch.bfloat16 and not p.is_meta for p in params)
    assert all(torch.equal(p, q) for p, q in zip(params, b.parameters()))  # seeded: same weights, any run
    assert len({round(p.float().std().item(), 4) for p in params if p.ndim >= 2}) > 1


def test_bench_fills_every_row_of_its_table(tmp_path):
    """`bench` on a fresh clone: every script of the table runs and reports every one of its rows (at the smoke
    configurations: what is checked is that each row is produced, not its value)."""
    from magic141_core.cli.bench import RATIOS

    out = tmp_path / "bench.json"
    result = run_script("-m", "magic141_core", "bench", "--smoke", "--comfyui", COMFYUI, "--json", out,
                        timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = json.loads(out.read_text())
    rows = table["ratios"]
    assert list(rows) == [key for ratios in RATIOS.values() for key in ratios]
    assert all(isinstance(row["value"], float) and row["error"] is None for row in rows.values()), rows
    assert "FAILED" not in result.stdout and "SMOKE configurations" in result.stdout
    assert "other processes kept" in result.stdout and 0 <= table["other load"]["max"] <= 1


def test_bench_counts_other_processes_load_but_not_its_own():
    """The bench's load figure is what OTHER processes used: the CPU time of a child it waited for is its own, a
    process it did not wait for (like another user's) counts as other. Counted in CPU seconds (the child spins for
    1 CPU-second however long that takes), which a loaded machine does not change, where a spin for a wall-clock
    time gets less of the CPU the busier the machine is."""
    import subprocess
    import sys

    import processes

    from magic141_core.cli.bench import OtherLoad, _machine_busy_s, _own_cpu_s

    spin = [sys.executable, "-c", "import time\nwhile time.process_time() < 1.0: pass"]
    before = _own_cpu_s()
    subprocess.run(spin, check=True)  # the bench's own child, waited for
    assert _own_cpu_s() - before >= 0.9
    other, busy, own = OtherLoad(), _machine_busy_s(), _own_cpu_s()
    with subprocess.Popen(spin) as child:  # not waited for while measuring
        deadline = time.monotonic() + 600
        while processes.cpu_seconds([child.pid]) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        spun = processes.cpu_seconds([child.pid])
        share, wall = other.share(), time.monotonic() - other.wall
        others, mine = (_machine_busy_s() - busy) - (_own_cpu_s() - own), _own_cpu_s() - own
    assert spun >= 0.5 and mine < 0.3  # the child's seconds are not ours while it runs (we only polled)
    assert others >= 0.8 * spun  # ... but the machine's, so "other" (the tick counts round to 0.01 s)
    assert 0 < share <= 1 and share * wall * (os.cpu_count() or 1) >= 0.8 * spun


def test_bench_prints_a_failed_script_s_rows_as_failed(tmp_path, monkeypatch):
    """A script that fails costs its rows, which say FAILED and why; the rows of the scripts that ran stay."""
    from magic141_core.cli.bench import RATIOS, format_table, run_benchmarks

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the copied script imports the pack from outside the repository
    (tmp_path / "parallel.py").write_text((REPO / "benchmarks" / "parallel.py").read_text())
    (tmp_path / "long_video.py").write_text("import sys\nsys.exit('long_video: no frames today')\n")
    table = run_benchmarks(tmp_path, smoke=True, runs=2)
    rows = table["ratios"]
    for key in RATIOS["parallel.py"]:
        assert len(rows[key]["values"]) == 2 and rows[key]["value"] == pytest.approx(rows[key]["values"][0])
    for key in RATIOS["long_video.py"]:
        assert rows[key]["value"] is None and rows[key]["error"] == "long_video: no frames today"
    missing = rows["fp32 ours / diffusers"]  # a script not there at all
    assert missing["value"] is None and "can't open file" in missing["error"]
    text = format_table(table)
    line = next(line for line in text.splitlines() if line.startswith("window time, later / earlier windows"))
    assert "FAILED" in line and "no frames today" in line
