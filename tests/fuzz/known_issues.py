"""Fuzz findings in code other helpers are fixing now (issue 11, item 2).

The fixed-time fuzz test (test_fuzz.py) fails on any finding that matches
none of these. Each entry has reproducers in regressions/ (status "open"),
which test_regressions.py replays as strict xfails: when the owner's fix
lands they start passing, the xfail turns red, and the entry and the "open"
marks go. The goal is an empty list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownIssue:
    name: str
    owner: str
    harnesses: tuple[str, ...]
    kind: str  # the Outcome.kind
    stage: str  # regex on the stage the child was in
    detail: str = ""  # regex on the exception text / signal

    def matches(self, harness: str, outcome) -> bool:
        return (harness in self.harnesses and outcome.kind == self.kind
                and re.search(self.stage, outcome.stage) is not None
                and re.search(self.detail, outcome.detail, re.S) is not None)


KNOWN_ISSUES = [
    KnownIssue(
        "converter internal errors on mutated originals (operator arity, weight rank, "
        "builtin options of another op type, out-of-range ints)",
        "converter (H1)", ("original",), "internal-error", r"^convert$", r"converter/"),
    KnownIssue(
        "corrupt training metadata of a converted model: converter/training_info.py and "
        "merge.initial_state index it blindly (KeyError, AttributeError)",
        "converter (H1)", ("converted",), "internal-error", r"^(load|bare)", r"converter/(training_info|merge)\.py"),
    KnownIssue(
        "TrainableModel trusts a converted model's input/output shapes (batch dimension, "
        "target/mode/loss shapes) and fails in numpy; the wheel's wrapper raising AttributeError",
        "trainer.py / runtime.py (H7)", ("original", "converted", "state"), "internal-error", r"^(invoke|load|save)",
        r"tflm_train/(trainer|runtime)\.py|tflite_micro/python"),
    # Two causes, told apart only under ASan (tests/fuzz/run_sanitized.sh and the
    # regressions' notes): our kernels and the wheel port (missing optional
    # inputs, null dims, unchecked ranks in Prepare), and stock TFLM's MEAN or CONV_2D in
    # a corrupt converted model (TFLM is not ours to patch: the host needs a
    # guarded check before it runs a converted model it did not make).
    KnownIssue(
        "the interpreter crashes on malformed converted models: our kernels' Prepare / the "
        "wheel port, and stock TFLM MEAN and CONV_2D",
        "kernels (H2, H7); lead for the stock-MEAN guard", ("original", "converted", "state"), "crash",
        r"^(invoke|load|converted|bare)"),
    KnownIssue(
        "a corrupt converted model that makes stock MEAN read out of bounds can also spin "
        "(regressions/tflm-mean-hang: SIGSEGV in one run, no answer in 20 s in another)",
        "lead: no owner yet (stock TFLM)", ("converted",), "hang", r"^(invoke|load|bare)"),
]


def known(harness: str, outcome) -> KnownIssue | None:
    for issue in KNOWN_ISSUES:
        if issue.matches(harness, outcome):
            return issue
    return None
