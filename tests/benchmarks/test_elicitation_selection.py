"""benchmarks/elicitation_selection.py at tiny sizes: every case runs and prints its row."""

import os
import re
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_the_selection_benchmark_prints_every_case_with_its_ratio():
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks" / "elicitation_selection.py"),
            *("--users", "20", "--pool", "30", "--repeats", "1", "--loop-users", "2"),
            *("--samples", "4", "2"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^(hh|synthetic) .* (\d+\.\d+) +(\d+\.\d+) +(\d+\.\d) +<= 1 s (met|missed)$",
                      result.stdout, re.MULTILINE)  # fmt: skip
    assert len(rows) == 5, result.stdout
    assert "S=4) information" in result.stdout and "S=2) information" in result.stdout
