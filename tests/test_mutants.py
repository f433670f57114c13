"""scripts/mutants.py stays runnable: every planted bug still applies to the code (its snippet occurs exactly once)
and names tests that exist, so the mutation check cannot rot silently between its runs (docs/testing.md)."""

from __future__ import annotations

import subprocess
import sys

from comfyui_env import REPO


def test_every_mutant_still_applies_and_names_existing_tests():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "mutants.py"), "--check"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("all ") and int(result.stdout.split()[1]) >= 30


def test_the_check_sees_a_snippet_that_no_longer_applies(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    from mutant_list import Mutant
    from mutants import problems

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_y():\n    pass\n")
    (tmp_path / "f.py").write_text("a = 1\na = 1\n")
    found = problems([Mutant("m", "b", "f.py", (("a = 1", "a = 2"), ("b", "c")), ("test_x.py::test_y",
                                                                                 "test_x.py::test_z"), "bug")],
                     tmp_path)
    assert found == ["m: f.py holds 2 copies of 'a = 1' (must be 1)", "m: f.py holds 0 copies of 'b' (must be 1)",
                     "m: no test test_x.py::test_z"]
