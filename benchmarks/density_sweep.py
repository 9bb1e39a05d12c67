"""Where delivery breaks: session_density.py for several session counts and speaking fractions.

Run with ``python benchmarks/density_sweep.py`` (``--counts 25,50,75,100,125,150``,
``--fractions 0,0.25,1``, ``--required 25,50,100``, ``--threshold 0.95``, ``--by median``, and
session_density.py's ``--seconds``, ``--settle``, ``--receiver-processes``, ``--decode-sample``,
``--concurrency``, ``--width/--height/--fps``). Each run is a fresh server process with fresh
receivers, printed in full as it goes. For each speaking fraction the counts run in rising order:
the required counts always, the others until delivery (the lower of the video and audio
``delivered / configured`` ratios, their median over sessions or with ``--by min`` their minimum)
first drops below the threshold. A table follows: every run's delivery, server cores and CPU per
session-second, receivers' cores and RSS per session, and per fraction the first session count
below the threshold (a coarse search: the breaking point lies between it and the count before).

On two cores a full sweep takes about half an hour; it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.session_density import (
    Config,
    Result,
    add_options,
    config_from,
    run,
    stopped_cleanly,
)


def _numbers(text: str, kind: type[float] | type[int]) -> list[float]:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None


def delivery(result: Result, by: str) -> float:
    """The lower of video and audio delivered / configured, by median or minimum over sessions."""
    if by == "min":
        return min(result.video_min, result.audio_min)
    return min(result.video_median, result.audio_median)


def sweep(
    configs: dict[tuple[float, int], Config],
    fractions: list[float],
    counts: list[int],
    required: set[int],
    threshold: float,
    by: str,
) -> tuple[list[Result], dict[float, int | None]]:
    """Every run, and per fraction the first session count whose delivery is below threshold."""
    results: list[Result] = []
    breaking: dict[float, int | None] = {}
    for fraction in fractions:
        breaking[fraction] = None
        for count in sorted(set(counts) | required):
            if breaking[fraction] is not None and count not in required:
                continue
            print(f"\n=== {count} sessions, speaking {fraction:g} ===", flush=True)
            result = run(configs[fraction, count])
            results.append(result)
            if breaking[fraction] is None and delivery(result, by) < threshold:
                breaking[fraction] = count
    return results, breaking


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--counts", default="25,50,75,100,125,150", help="session counts, rising")
    parser.add_argument("--fractions", default="0,0.25,1", help="speaking fractions (0..1)")
    parser.add_argument("--required", default="25,50,100", help="counts always run")
    parser.add_argument("--threshold", type=float, default=0.95, help="delivery limit (0.95)")
    parser.add_argument("--by", choices=("median", "min"), default="median", help="over sessions")
    add_options(parser, sweep=True)
    args = parser.parse_args()
    try:
        counts = sorted({int(n) for n in _numbers(args.counts, int)})
        fractions = _numbers(args.fractions, float)
        required = {int(n) for n in _numbers(args.required, int)}
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if not counts or not fractions:
        parser.error("--counts and --fractions need at least one value each")
    if not 0 < args.threshold <= 1:
        parser.error(f"--threshold must be in (0, 1], got {args.threshold:g}")
    configs = {
        (fraction, count): config_from(parser, args, count, fraction)
        for fraction in fractions
        for count in sorted(set(counts) | required)
    }

    with stopped_cleanly():
        results, breaking = sweep(configs, fractions, counts, required, args.threshold, args.by)
    print(f"\ndelivery = the lower of video and audio delivered / configured ({args.by})")
    print(
        f"{'speaking':>8} {'sessions':>8} {'delivery':>8} {'video':>11} {'audio':>11} "
        f"{'server':>7} {'CPU-s/ss':>8} {'recv':>6} {'MiB/sess':>8}"
    )
    for r in results:
        print(
            f"{r.speaking:8g} {r.sessions:8d} {delivery(r, args.by):8.2f} "
            f"{r.video_min:5.2f}/{r.video_median:5.2f} {r.audio_min:5.2f}/{r.audio_median:5.2f} "
            f"{r.server_cores:7.2f} {r.server_cpu_per_session:8.3f} {r.receiver_cores:6.2f} "
            f"{r.rss_per_session_mib:8.1f}"
        )
    print("(video and audio: min/median over sessions; server and recv: cores)")
    for fraction, found in breaking.items():
        if found is None:
            print(
                f"speaking {fraction:g}: delivery stayed at or above {args.threshold:g} up to "
                f"{max(set(counts) | required)} sessions"
            )
        else:
            print(
                f"speaking {fraction:g}: delivery first below {args.threshold:g} at {found} "
                "sessions"
            )


if __name__ == "__main__":
    main()
