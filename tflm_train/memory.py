"""Measured memory: the smallest tensor arena a model runs in.

Found by creating real interpreters (the tflite-micro x86 reference build)
with shrinking arenas until AllocateTensors fails: TFLM plans every tensor,
scratch buffer and persistent buffer (our training state included) there,
so an interpreter that allocates can invoke. The number is for this 64-bit
host build; a 32-bit microcontroller needs somewhat less (smaller pointers
and tensor structs), never more.

The probes run in a worker process: this TFLM build crashes in its memory
planner (GreedyMemoryPlanner::CalculateOffsetsIfNeeded) for some arenas just
too small to plan in, instead of failing cleanly. A crash counts as "does not
fit" and the worker is restarted - unless the worker died with an
AddressSanitizer / UndefinedBehaviorSanitizer report (a plugin built with
-DTFLMT_SANITIZE=ON): that is a bug, raised as SanitizerReport.

The same guarded worker checks that a model prepares and runs at all
(`check_prepares`): a corrupt .tflite can pass every structural check and
still crash the stock interpreter while it plans memory or invokes.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tflm_train.converter.model_ir import ModelError
from tflm_train.runtime import InterpreterError

ALIGNMENT = 16
_LARGEST = 256 * 1024 * 1024

# What a sanitizer writes first in its report (ASan, UBSan's "file:line: runtime error: ...").
SANITIZER_MARKERS = ("AddressSanitizer", "UndefinedBehaviorSanitizer", "runtime error:", "LeakSanitizer")


class SanitizerReport(RuntimeError):
    """A sanitized kernel plugin found a memory or UB error: a bug, never "too small"."""


class WorkerHung(Exception):
    """The worker gave no answer in time (a kernel spinning on a corrupt model)."""

    def __init__(self, seconds: float):
        super().__init__(f"no answer in {seconds:.0f} s")


class WorkerCrashed(Exception):
    """The worker died without a sanitizer report (a plain crash, e.g. SIGSEGV)."""

    def __init__(self, returncode: int | None):
        self.returncode = returncode
        if returncode is not None and returncode < 0:
            try:
                how = signal.Signals(-returncode).name
            except ValueError:
                how = f"signal {-returncode}"
        else:
            how = f"exit code {returncode}"
        super().__init__(how)


# ASan also reports a plain crash it intercepts (SEGV, FPE, BUS) as
# "AddressSanitizer: SEGV on unknown address ...". In the wheel's own code that
# is the planner crash this module expects (not a finding); in our plugin it is.
_DEADLY_SIGNALS = ("SEGV on unknown address", "FPE on unknown address", "BUS on unknown address", "deadly signal")
_PLUGIN_NAME = "libtflm_train_ops"


def sanitizer_line(text: str) -> str | None:
    """The first line of a sanitizer report in `text` that is a finding, or None."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not any(marker in line for marker in SANITIZER_MARKERS):
            continue
        if any(signal_text in line for signal_text in _DEADLY_SIGNALS):
            frame = next((l for l in lines[i + 1:] if l.strip().startswith("#0 ")), "")
            if _PLUGIN_NAME not in frame and "tflm_ops/" not in frame:
                return None  # a crash outside our kernels: the planner's
        return line.strip()
    return None


class _Prober:
    """A worker process answering "does the model allocate in N bytes?"."""

    def __init__(self, model_bytes: bytes):
        self.directory = Path(tempfile.mkdtemp(prefix="tflmt-probe-"))
        self.path = self.directory / "model.tflite"
        self.path.write_bytes(model_bytes)
        self.stderr_path = self.directory / "stderr.txt"
        self.process: subprocess.Popen | None = None
        self._stderr = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tflm_train._arena_probe", str(self.path)]

    def _environment(self) -> dict[str, str]:
        # The interpreter redirects fd 2 while it prepares (runtime.py collects
        # TFLM's messages there), which would swallow a sanitizer report: have
        # the sanitizers write it to files we read instead. Harmless otherwise.
        # abort_on_error: a sanitized worker always dies by a signal, as an
        # unsanitized one does, never with a plain exit code.
        env = dict(os.environ, TFLMT_PROBE_DIR=str(self.directory))
        extra = f"log_path={self.directory / 'sanitizer'}:abort_on_error=1"
        for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            env[name] = ":".join(filter(None, [env.get(name, ""), extra]))
        return env

    def _start(self) -> subprocess.Popen:
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = open(self.stderr_path, "wb")  # a file: a pipe could fill and block
        return subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=self._environment(),
        )

    def _sanitizer_report(self) -> str | None:
        # ASan honours log_path; UBSan's report is in what the worker's
        # runtime captured from fd 2 (see _arena_probe.keep_native_stderr_on_crash).
        reports = sorted(self.directory.glob("sanitizer*")) + sorted(self.directory.glob("native-stderr-*"))
        texts = [p.read_text(errors="replace") for p in reports]
        if self.stderr_path.exists():
            texts.append(self.stderr_path.read_text(errors="replace"))
        for report in reports:  # inspected: a later crash must not find them again
            report.unlink()
        for text in texts:
            line = sanitizer_line(text)
            if line is not None:
                return line
        return None

    def _worker_error(self) -> str:
        lines = [l for l in self.stderr_path.read_text(errors="replace").splitlines() if l.strip()]
        return lines[-1].strip() if lines else "no message"

    def ask(self, arena: int, invoke: bool = False, timeout: float | None = None) -> tuple[bool, str]:
        """(allocates [and invokes], why not) from a live worker; raises
        WorkerCrashed or SanitizerReport when the worker dies on this question,
        WorkerHung when it gives no answer in `timeout` seconds (killed)."""
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        try:
            self.process.stdin.write(f"{arena}{' invoke' if invoke else ''}\n")
            self.process.stdin.flush()
            if timeout is not None and not select.select([self.process.stdout], [], [], timeout)[0]:
                self.process.kill()
                self.process.wait()
                raise WorkerHung(timeout)
            answer = self.process.stdout.readline().rstrip("\n")
        except BrokenPipeError:
            answer = ""
        if answer[:1] in ("0", "1"):
            return answer[:1] == "1", answer[2:]
        self.process.wait()
        report = self._sanitizer_report()
        if report is not None:
            raise SanitizerReport(f"sanitizer report while preparing the model in a {arena}-byte arena: {report}")
        if self.process.returncode is not None and self.process.returncode > 0:
            # Python itself failed (not a crash in C++): the model did not load.
            raise InterpreterError(f"the arena probe could not load the model ({self._worker_error()})")
        raise WorkerCrashed(self.process.returncode)

    def fits(self, arena: int) -> bool:
        try:
            return self.ask(arena)[0]
        except WorkerCrashed:
            return False  # crashed in the planner: too small

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()
        if self._stderr is not None:
            self._stderr.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _bisect(prober: _Prober, low: int, high: int) -> int:
    """The smallest ALIGNMENT multiple in (low, high] that fits, given that
    `low` does not fit (0: nothing known) and `high` does."""
    while high - low > ALIGNMENT:
        middle = (low + high) // 2 // ALIGNMENT * ALIGNMENT
        if middle <= low:
            break
        if prober.fits(middle):
            high = middle
        else:
            low = middle
    return high


def smallest_arena(model_bytes: bytes) -> int:
    """Bytes of the smallest arena (to 16 bytes) the model allocates in."""
    prober = _Prober(model_bytes)
    try:
        high = 16 * 1024
        while not prober.fits(high):
            high *= 2
            if high > _LARGEST:
                raise InterpreterError("model does not fit a 256 MB arena")
        low = 0  # largest size known not to fit
        return _bisect(prober, low, high)
    finally:
        prober.close()


def smallest_arena_within(model_bytes: bytes, budget: int, guess: int | None = None) -> int | None:
    """smallest_arena, or None when the model does not allocate in `budget`
    bytes (one probe). `guess` (e.g. a similar model's arena) starts the
    search next to the answer: a budget search measures many near-equal
    models, and every probe prepares the model once."""
    prober = _Prober(model_bytes)
    budget = budget // ALIGNMENT * ALIGNMENT  # answers are multiples of ALIGNMENT
    try:
        if budget <= 0 or not prober.fits(budget):
            return None
        low, high = 0, budget  # low: known not to fit (0: nothing known); high: fits
        if guess is not None and 0 < guess < budget:
            step = 256
            probe = guess // ALIGNMENT * ALIGNMENT
            if prober.fits(probe):
                high = probe
                while high - step > low and prober.fits(high - step):
                    high, step = high - step, step * 2
                low = max(low, high - step)
            else:
                low = probe
                while low + step < high and not prober.fits(low + step):
                    low, step = low + step, step * 2
                high = min(high, low + step)
        return _bisect(prober, low, high)
    finally:
        prober.close()


# One invocation of a model this tool handles takes well under a second
# here; a stock kernel spinning on a corrupt model never answers.
CHECK_TIMEOUT_SECONDS = 30.0


def check_prepares(model_bytes: bytes, arena_size: int = _LARGEST) -> None:
    """Raises ModelError unless the stock TFLM interpreter prepares the model
    and invokes it once (every input zero) without crashing.

    Runs in a worker process, in an arena large enough for any model this
    tool handles (pages the planner does not touch cost nothing). A crash or
    a refusal means the model itself is broken: a .tflite whose flatbuffer
    parses and passes every structural check can still make TFLM's planner
    or a stock kernel crash (seen: the memory planner, MEAN, CONV_2D with a
    zero stride or dilation), and a converted model keeps those operators.
    """
    from tflm_train.converter.integrity import refuse_damaged

    refuse_damaged(model_bytes)  # a damaged converted model: its own line, no worker needed
    prober = _Prober(model_bytes)
    try:
        try:
            works, why = prober.ask(arena_size, invoke=True, timeout=CHECK_TIMEOUT_SECONDS)
        except WorkerHung as hung:
            raise ModelError(f"the TFLM interpreter does not finish running this model ({hung}): corrupt .tflite") from None
        except WorkerCrashed as crash:
            raise ModelError(
                f"the TFLM interpreter crashes ({crash}) on this model: corrupt .tflite"
            ) from None
        except InterpreterError as exc:
            raise ModelError(f"the TFLM interpreter cannot load this model: {exc}") from None
        if not works:
            raise ModelError(f"the TFLM interpreter cannot run this model: {why}")
    finally:
        prober.close()
