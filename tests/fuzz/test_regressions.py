"""Replays the fuzz findings saved in regressions/: each case must now end
as `ok` or `refused` (one line, a user-error type).

regressions/NAME.txt is one line: "<harness> <option> | <who fixed it> | fixed | what it is",
next to the case itself (NAME.bin). Nothing is tolerated: a case that is
not fixed fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import fuzzing

REGRESSIONS = Path(__file__).parent / "regressions"


def _cases():
    for description in sorted(REGRESSIONS.glob("*.txt")):
        fields = [f.strip() for f in description.read_text().splitlines()[0].split("|")]
        (harness, option), status = fields[0].split(), fields[2]
        assert status == "fixed", f"{description.name}: status {status!r} (open findings are not tolerated)"
        yield pytest.param(description.with_suffix(".bin"), harness, option, id=description.stem)


@pytest.mark.parametrize("case, harness, option", list(_cases()))
def test_fuzz_regression(case, harness, option):
    outcome = fuzzing.replay(harness, option, case.read_bytes())
    assert not outcome.is_finding, f"{outcome.kind} at {outcome.stage}: {outcome.detail.strip()[-600:]}"
