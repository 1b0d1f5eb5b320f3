"""Run every benchmark (tests/benchmarks/bench_*.py) one after another and summarise.

Each benchmark is a standalone script that measures its goal side by side in one run and
prints lines containing PASS or MISS.  This runner only sequences them so that no two
compete for the two cores, and repeats the verdict lines at the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not wanted or p.stem in wanted or p.stem[6:] in wanted)
    verdicts: list[str] = []
    failures = 0
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        sys.stdout.write(proc.stdout)
        verdicts += [
            f"{script.stem}: {line.strip()}" for line in proc.stdout.splitlines() if "PASS" in line or "MISS" in line
        ]
        if proc.returncode != 0:
            failures += 1
            verdicts.append(f"{script.stem}: ERROR exit {proc.returncode}")
        print(f"--- {script.stem} took {time.monotonic() - start:.1f} s", flush=True)
    print("\n=== summary ===")
    for line in verdicts:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
