"""pytest plugin for tests/fuzz/run_sanitized.sh (-p sanitizer_capture).

UndefinedBehaviorSanitizer writes its report to fd 2 (it ignores log_path in
an ASan process), and tflm_train.runtime sends fd 2 to an unlinked temporary
file while TFLM runs: a report would vanish with the process. This keeps
that capture in $TFLMT_SANITIZER_REPORTS/native-stderr-<pid>.txt instead,
where the script looks for reports after the run.
"""

import os
from pathlib import Path

from tflm_train._arena_probe import keep_native_stderr_on_crash

keep_native_stderr_on_crash(Path(os.environ["TFLMT_SANITIZER_REPORTS"]))
