"""The long fuzz campaign (the CI test runs a short, fixed-time version).

    python tests/fuzz/campaign.py --cases 10000                 # all harnesses
    python tests/fuzz/campaign.py --harness converted --cases 2000 --findings build/fuzz-findings

Cases are split evenly over the harnesses; each runs in a forked child
(tests/fuzz/fuzzing.py). Findings (crash, hang, internal error, a message
that is not one line) are saved as <harness>-<kind>-NNNN.bin with a .txt
saying what happened. Prints a JSON summary; exits 1 if anything was found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzing  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000, help="cases in all (split over the harnesses)")
    parser.add_argument("--harness", action="append", choices=fuzzing.TARGETS,
                        help="run only these (repeatable); default: all")
    parser.add_argument("--hours", type=float, default=24.0, help="stop after this long in all")
    parser.add_argument("--findings", type=Path, default=Path("build/fuzz-findings"))
    args = parser.parse_args()

    harnesses = args.harness or list(fuzzing.TARGETS)
    campaign = fuzzing.Campaign(findings_dir=args.findings, progress_every=250)
    started = time.monotonic()
    per_harness = max(1, args.cases // len(harnesses))
    for position, harness in enumerate(harnesses):
        # The time left is shared by the harnesses still to run.
        left = args.hours * 3600 - (time.monotonic() - started)
        t0 = time.monotonic()
        fuzzing.run_harness(harness, campaign, max_examples=per_harness,
                            seconds=max(0.0, left / (len(harnesses) - position)))
        print(json.dumps({"harness": harness, "seconds": round(time.monotonic() - t0, 1),
                          "outcomes": dict(campaign.counts.get(harness, {}))}), flush=True)
    summary = {
        "cases": campaign.total(),
        "seconds": round(time.monotonic() - started, 1),
        "outcomes": {h: dict(c) for h, c in campaign.counts.items()},
        "findings": [f"{h} [{label}] {o.kind} at {o.stage}: {o.detail.strip().splitlines()[-1] if o.detail.strip() else ''}"
                     for h, label, o in campaign.findings],
    }
    print(json.dumps(summary, indent=2))
    return 1 if campaign.findings else 0


if __name__ == "__main__":
    sys.exit(main())
