"""Run the benchmark suite: ``python bench/run.py [--quick] [--scripts NAME ...]`` (what
``tox -e bench`` does; ``tox -e bench -- --quick --scripts glm peers`` for a part).

Each ``bench/bench_*.py`` script (or those named by ``--scripts``: ``glm`` for
``bench_glm.py``) is run in its own process, in name order, with the other arguments
given here; they write their results under ``bench/results/``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def select(argv: list[str]) -> tuple[list[str] | None, list[str]]:
    """(the script names after ``--scripts``, or None for all; the other arguments)."""
    if "--scripts" not in argv:
        return None, argv
    i = argv.index("--scripts")
    names, rest = [], argv[:i]
    for j, arg in enumerate(argv[i + 1 :], start=i + 1):
        if arg.startswith("--"):
            rest += argv[j:]
            break
        names.append(arg)
    return names, rest


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names, args = select(argv)
    scripts = sorted(here.glob("bench_*.py"))
    if names is not None:
        unknown = set(names) - {s.stem.removeprefix("bench_") for s in scripts}
        if unknown:
            print(f"no such benchmark: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
    failed = []
    for script in scripts:
        print(f"== {script.name} {' '.join(args)}", flush=True)
        if subprocess.call([sys.executable, str(script), *args]) != 0:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
