"""Plant small, user-visible bugs into the pack one at a time and check that the tests catch each (a mutation check).

Each mutant in `scripts/mutant_list.py` names a file, one or more exact snippets and their mutated text (a wrong
sign, an off-by-one, a swapped axis, a dropped mask, a forgotten state, ...) and the tests that should fail on it.
The runner copies the working tree (tracked and untracked files, not the ignored ones; the environments and hosts
are linked) into scratch folders, never touching the repository's own files; then, per mutant: apply it in a scratch
copy, run just its tests, restore the file. A mutant is "killed" when its tests fail (or hang past the limit) and
"SURVIVED" when they pass: then the tests cannot see that bug. Before any mutant, the same tests must pass on the
unmutated copy (otherwise a kill would mean nothing).

    .venv/bin/python scripts/mutants.py                 # every mutant, one at a time (about 20 min on 2 cores)
    .venv/bin/python scripts/mutants.py --jobs 2        # two scratch copies side by side
    .venv/bin/python scripts/mutants.py --only int8-dequant-scale lora-rank
    .venv/bin/python scripts/mutants.py --list          # the mutants and their tests, nothing run
    .venv/bin/python scripts/mutants.py --check         # every snippet still occurs exactly once (the suite runs it)

Not part of CI (too slow); docs/testing.md has its last result. Exit code: 0 when every mutant was killed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from mutant_list import MUTANTS, Mutant  # noqa: E402

LINKED = (".venv", ".venv-compat", ".venv-tools", ".host", ".host-compat")  # environments: linked, not copied
TIMEOUT_S = 1800  # per mutant; a mutant that makes its tests hang this long counts as killed ("timeout")


def problems(mutants: list[Mutant], root: Path = REPO) -> list[str]:
    """What no longer applies: a snippet that does not occur exactly once in its file, a test file or test function
    that does not exist. Empty when every mutant can be planted."""
    found = []
    for m in mutants:
        text = (root / m.path).read_text()
        for old, _ in m.edits:
            if text.count(old) != 1:
                found.append(f"{m.name}: {m.path} holds {text.count(old)} copies of {old!r} (must be 1)")
        for test in m.tests:
            file, _, name = test.partition("::")
            path = root / "tests" / file
            function = name.split("[")[0]
            if not path.is_file() or (function and f"def {function}(" not in path.read_text()):
                found.append(f"{m.name}: no test {test}")
    return found


def scratch_copy(into: Path) -> Path:
    """The working tree (tracked + untracked, not ignored) copied into `into`/repo, environments linked."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    root = into / "repo"
    for name in filter(None, files):
        source = REPO / name
        if source.is_symlink() or not source.is_file():
            continue
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        target.chmod(source.stat().st_mode)
    for name in LINKED:
        if (REPO / name).exists():
            (root / name).symlink_to((REPO / name).resolve(), target_is_directory=True)
    return root


def run_tests(root: Path, tests: list[str], timeout: float = TIMEOUT_S) -> tuple[str, str]:
    """("passed" | "failed" | "timeout", the last lines of pytest's output) for `tests` in the copy at `root`."""
    cmd = [sys.executable, "-m", "pytest", "-c", "tests/pytest.ini", "-x", "-q", "--no-header", "--tb=line",
           *[f"tests/{t}" for t in tests]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    failures = [line for line in lines if line.startswith("FAILED") or ": " in line and line.startswith("/")]
    return ("passed" if result.returncode == 0 else "failed"), "\n".join(failures[:2] or lines[-4:])


def plant(root: Path, mutant: Mutant) -> str:
    """Apply `mutant` in the copy at `root`; returns the file's original text (for `restore`)."""
    path = root / mutant.path
    original = text = path.read_text()
    for old, new in mutant.edits:
        assert text.count(old) == 1, f"{mutant.name}: {old!r} does not occur exactly once in {mutant.path}"
        text = text.replace(old, new)
    path.write_text(text)
    return original


def try_mutant(root: Path, mutant: Mutant) -> dict:
    original = plant(root, mutant)
    start = time.monotonic()
    try:
        outcome, tail = run_tests(root, mutant.tests)
    finally:
        (root / mutant.path).write_text(original)
    result = {"killed": "SURVIVED" if outcome == "passed" else ("timeout" if outcome == "timeout" else "killed"),
              "seconds": round(time.monotonic() - start, 1), "tail": tail.replace(f"{root}/", "")}
    why = result["tail"].splitlines()[0][:110] if result["killed"] == "killed" and result["tail"] else ""
    print(f"{mutant.name:30} {result['killed']:8} {result['seconds']:6.1f} s  {mutant.behaviour:30} {why}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    parser.add_argument("--jobs", type=int, default=1, help="scratch copies run side by side (default 1)")
    parser.add_argument("--list", action="store_true", help="print the mutants and their tests; run nothing")
    parser.add_argument("--check", action="store_true", help="check every snippet and test still exists; run nothing")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.only and len(mutants) != len(args.only):
        parser.error(f"unknown mutants: {sorted(set(args.only) - {m.name for m in MUTANTS})}")
    if args.list:
        for m in mutants:
            print(f"{m.name:32} {m.behaviour:28} {m.path}\n{'':32} bug: {m.bug}\n{'':32} killed by: "
                  f"{', '.join(m.tests)}")
        return 0
    found = problems(mutants)
    if found or args.check:
        print("\n".join(found) or f"all {len(mutants)} mutants apply")
        return 1 if found else 0

    with tempfile.TemporaryDirectory(prefix="magic141-mutants-") as scratch:
        roots = [scratch_copy(Path(scratch) / f"copy{j}") for j in range(max(1, args.jobs))]
        tests = sorted({t for m in mutants for t in m.tests})
        print(f"baseline: {len(tests)} tests on the unmutated copy ...", flush=True)
        outcome, tail = run_tests(roots[0], tests)
        if outcome != "passed":
            print(f"the tests do not pass unmutated ({outcome}); fix that first:\n{tail}")
            return 1
        print(f"{len(mutants)} mutants, {len(roots)} at a time", flush=True)
        free = list(roots)

        def one(mutant):
            root = free.pop()
            try:
                return mutant, try_mutant(root, mutant)
            finally:
                free.append(root)

        with ThreadPoolExecutor(len(roots)) as pool:
            results = dict((m.name, r) for m, r in pool.map(one, mutants))
    survivors = [m for m in mutants if results[m.name]["killed"] == "SURVIVED"]
    print(f"\n{len(mutants)} mutants: {len(mutants) - len(survivors)} killed, {len(survivors)} survived")
    for m in survivors:
        print(f"SURVIVED {m.name}: {m.bug} ({m.path}); tests that should have failed: {', '.join(m.tests)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
