"""Run every benchmark script (benchmarks/bench_*.py, then roofline.py) with its defaults, one after another.

Each writes its JSON and Markdown into benchmarks/results/. Exit status: the number of scripts whose
checks failed or that crashed (0 = all passed). ``make bench`` calls this.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    # roofline.py last: it reads bench_int8.py's ResNet-50 INT8 latency
    scripts = sorted(HERE.glob("bench_*.py")) + [HERE / "roofline.py"]
    if argv:
        scripts = [s for s in scripts if any(name in s.stem for name in argv)]
    failed = []
    for script in scripts:
        print(f"=== {script.name}", flush=True)
        if subprocess.call([sys.executable, str(script)]) != 0:
            failed.append(script.name)
    print(
        f"=== {len(scripts) - len(failed)}/{len(scripts)} benchmark scripts passed their checks"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return len(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
