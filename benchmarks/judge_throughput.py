"""Offline judge throughput (responses/s once built), on XSTest's human-labelled completions.

.venv/bin/python benchmarks/judge_throughput.py --n 1000
"""

from __future__ import annotations

import argparse
import time

from _cpu import cpu_kind

from safedose.data import xstest_rows
from safedose.judges import get_judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--judges", nargs="*", default=["strmatch", "refusal", "harm", "moderation"])
    args = parser.parse_args()
    rows = [{"prompt": r["prompt"], "response": r["completion"]} for r in xstest_rows()[: args.n]]
    print(f"CPU: {cpu_kind()}")
    print("| judge | responses | seconds | responses/s |\n|---|---|---|---|")
    for name in args.judges:
        judge = get_judge(name)  # builds on first use; not timed
        judge.judge(rows[:8])  # warm-up (lazy imports, first batch)
        started = time.perf_counter()
        judge.judge(rows)
        wall = time.perf_counter() - started
        print(f"| {name}@{judge.revision} | {len(rows)} | {wall:.1f} | {len(rows) / wall:.0f} |")


if __name__ == "__main__":
    main()
