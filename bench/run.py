"""Run every benchmark of the suite: ``python bench/run.py [--quick]`` (what ``tox -e bench`` does).

Each ``bench/bench_*.py`` script is run in its own process, in name order, with the
arguments given here; they write their results under ``bench/results/``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"== {script.name} {' '.join(argv)}", flush=True)
        if subprocess.call([sys.executable, str(script), *argv]) != 0:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
