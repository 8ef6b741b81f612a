"""The fixed-time fuzz run of CI (about 85 s): every harness of fuzzing.py,
with a fixed sequence of hypothesis cases (derandomized), each in a forked
child. The long campaign: tests/fuzz/campaign.py (README, Reliability)."""

from __future__ import annotations

import pytest

import fuzzing


@pytest.mark.parametrize("harness, seconds, at_least", [
    ("original", 25, 10),
    ("converted", 25, 10),
    ("state", 20, 10),
    ("data", 15, 10),
])
def test_fuzz_for_a_fixed_time(harness, seconds, at_least, tmp_path):
    campaign = fuzzing.Campaign(findings_dir=tmp_path)
    fuzzing.run_harness(harness, campaign, max_examples=100_000, seconds=seconds, derandomize=True)
    counts = campaign.counts[harness]
    assert sum(counts.values()) >= at_least, counts  # it ran cases, not only setup
    assert counts["ok"] + counts["refused"] > 0, counts
    # No tolerated findings: every crash, hang or internal error fails the run.
    assert not campaign.findings, "\n".join(
        f"{h} [{label}] {o.kind} at {o.stage}: {o.detail.strip()[-400:]}" for h, label, o in campaign.findings
    ) + f"\n(cases saved in {tmp_path})"


def test_the_oracle_tells_each_outcome_apart():
    """run_isolated classifies a child's end: the harness itself is tested."""
    import os
    import signal
    import time

    from tflm_train.data import DataError

    def raises(error):
        def function(data, channel):
            channel.stage("here")
            raise error
        return function

    def segfault(data, channel):
        os.kill(os.getpid(), signal.SIGSEGV)

    def sleeps(data, channel):
        time.sleep(30)

    assert fuzzing.run_isolated(lambda d, c: None, b"").kind == "ok"
    refused = fuzzing.run_isolated(raises(DataError("bad data")), b"")
    assert (refused.kind, refused.stage, refused.detail) == ("refused", "here", "DataError: bad data")
    assert fuzzing.run_isolated(raises(DataError("two\nlines")), b"").kind == "bad-message"
    internal = fuzzing.run_isolated(raises(KeyError("x")), b"")
    assert internal.kind == "internal-error" and "KeyError" in internal.detail
    assert (fuzzing.run_isolated(segfault, b"").kind, fuzzing.run_isolated(segfault, b"").detail) == ("crash", "SIGSEGV")
    assert fuzzing.run_isolated(sleeps, b"", timeout=1).kind == "hang"
