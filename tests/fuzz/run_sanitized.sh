#!/usr/bin/env bash
# Builds the kernel plugin with AddressSanitizer + UndefinedBehaviorSanitizer
# into build/asan and runs the kernel tests against it.
#
#   tests/fuzz/run_sanitized.sh                 # the default kernel tests
#   tests/fuzz/run_sanitized.sh tests/test_x.py # any pytest arguments instead
#
# The plugin is picked up through TFLMT_PLUGIN (tflm_train/plugin.py). Python
# itself is not sanitized, so the compiler's libasan is preloaded; leak
# detection is off because CPython keeps memory until exit by design. Any
# ASan or UBSan report aborts the process, which fails the test.
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-python}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}

echo "== ASan + UBSan build of the kernel plugin (build/asan)"
cmake -S tflm_ops -B build/asan -DTFLMT_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTFLMT_BUILD_WHEEL_PLUGIN=ON >/dev/null
cmake --build build/asan -j"${JOBS:-2}" --target tflm_train_ops

libasan=$(g++ -print-file-name=libasan.so)
libstdcxx=$(g++ -print-file-name=libstdc++.so)
if [ ! -e "$libasan" ]; then
  echo "libasan.so not found (g++ -print-file-name=libasan.so gave '$libasan')" >&2
  exit 1
fi

# The kernel tests: every kernel-vs-TensorFlow file plus the plugin, state and
# memory tests. Left out: the fuzz tests (they crash TFLM on purpose, in
# forked children, which ASan would report too), and, because
# they are far too slow under ASan on two cores: test_cnn_models.py and
# test_real_models.py (whole MLPerf / microWakeWord models; the same kernels
# run on small graphs in the files below).
if [ $# -eq 0 ]; then
  set -- $(ls tests/test_*kernels*.py) tests/test_plugin.py tests/test_state.py \
         tests/test_memory.py \
         tests/test_sparse_channels.py::test_channel_rows_shrink_the_state_and_the_arena \
         tests/test_sparse_channels.py::test_fully_connected_channels_train_like_tensorflow \
         tests/test_sparse_channels.py::test_conv_and_depthwise_channel_gradients_match_tensorflow
fi

# Reports go to files: tflm_train.runtime redirects fd 2 while the
# interpreter runs (to collect TFLM's messages), which would swallow them.
reports=build/asan/reports
rm -rf "$reports" && mkdir -p "$reports"
echo "== kernel tests under ASan + UBSan: $*"
export TFLMT_PLUGIN="$PWD/build/asan/libtflm_train_ops.so"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$PWD/$reports/report"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$PWD/$reports/report"
# libstdc++ after libasan: Python does not link it, and ASan must find the real
# __cxa_throw when it starts (the wheel throws C++ exceptions on bad models).
status=0
export TFLMT_SANITIZER_REPORTS="$PWD/$reports"
PYTHONPATH="$PWD/tests/fuzz${PYTHONPATH:+:$PYTHONPATH}" LD_PRELOAD="$libasan $libstdcxx" \
  "$python" -m pytest -q -p no:cacheprovider -p sanitizer_capture "$@" || status=$?
# ASan's reports (log_path), and UBSan's in the stderr a crashed process captured.
found=$(grep -lE "AddressSanitizer|UndefinedBehaviorSanitizer|runtime error:" "$reports"/* 2>/dev/null || true)
if [ -n "$found" ]; then
  echo "== sanitizer reports" >&2
  cat $found >&2
  exit 1
fi
exit $status
