"""How long dpkit takes to start: ``import dpkit``, the client's ``Scene``, and the CLI's
``--version`` and ``--help``, against ``import aiortc`` measured in the same run.

Run with ``python benchmarks/startup.py [--n 15]``. Each case is a new interpreter (``python -c
...`` or the installed ``dpkit`` script) timed from spawn to exit, so it counts what a user waits
for, interpreter start included; ``python -c pass`` is printed as that floor. The cases take turns
(one of each per round, the order rotated every round) so whatever else the machine does slows
them alike; the first ``--warmup`` rounds fill the OS's file cache and are not counted. It prints
medians, best times and ratios to ``import aiortc`` and asserts nothing (exit status 0); whether
the target (``import dpkit`` at most 1.3x ``import aiortc``) was met is printed.

``import dpkit`` loads the errors and nothing heavy: the client's classes are loaded when first
used (``dpkit.Scene``), which is the ``from dpkit import Scene`` line: aiortc, aiohttp and the
protocol core. Neither loads the server (``dpkit.server``), numpy, or the persona's voice.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_RATIO = 1.3


def cases() -> dict[str, list[str]]:
    python = sys.executable
    script = Path(python).with_name("dpkit")
    return {
        "python -c pass": [python, "-c", "pass"],
        "import aiortc": [python, "-c", "import aiortc"],
        "import dpkit": [python, "-c", "import dpkit"],
        "from dpkit import Scene": [python, "-c", "from dpkit import Scene"],
        "dpkit --version": [str(script), "--version"],
        "dpkit --help": [str(script), "--help"],
    }


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=15, help="counted rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds not counted (default 2)")
    args = parser.parse_args()
    commands = cases()
    names = list(commands)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.warmup + args.n):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = timed(commands[name])
            if round_ >= args.warmup:
                samples[name].append(elapsed)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"rounds: {args.n} (+{args.warmup} warm-up); each case a new process\n")
    floor = statistics.median(samples["import aiortc"])
    print(f"{'case':<26}{'median ms':>10}{'best ms':>10}{'/ aiortc':>10}")
    for name in names:
        median = statistics.median(samples[name])
        print(
            f"{name:<26}{median * 1000:>10.1f}{min(samples[name]) * 1000:>10.1f}"
            f"{median / floor:>10.2f}"
        )
    ratio = statistics.median(samples["import dpkit"]) / floor
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"\nimport dpkit / import aiortc: {ratio:.2f} (target <= {TARGET_RATIO}: {verdict})")


if __name__ == "__main__":
    main()
