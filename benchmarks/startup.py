"""`kedro registry list` start-up time: this project vs a bare Kedro project.

The bare project is made with `kedro new` (blank template, offline) in a
temporary folder. Each command runs ``--repeats`` times, alternating; the
medians and their difference are printed (goal: within 2 s of bare Kedro).

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))
ENV = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}


def timed(cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([KEDRO, "registry", "list"], cwd=cwd, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [KEDRO, "new", "--name", "bare", "--tools", "none", "--example", "n"],
            cwd=tmp,
            env=ENV,
            check=True,
            capture_output=True,
        )
        bare = Path(tmp) / "bare"
        timed(bare), timed(ROOT)  # warm the file cache
        ours, theirs = [], []
        for _ in range(args.repeats):
            theirs.append(timed(bare))
            ours.append(timed(ROOT))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"kedro registry list, median of {args.repeats}:")
    print(f"  steerable-alignment: {a:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"  bare Kedro project : {b:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"  difference: {a - b:+.2f} s  (goal: within 2 s)")


if __name__ == "__main__":
    main()
