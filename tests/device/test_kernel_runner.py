"""tflm-train's kernels on Cortex-M4F, M3 and M55 under QEMU, byte for byte
against x86, without a TFLM tree.

firmware/kernel_runner calls the kernels through the array port
(tflm_ops/port/array/) on cases recorded in the TFLM x86 interpreter
(make_kernel_cases.py). The same runner source runs on the host and, cross-
compiled with our startup code and linker scripts, on QEMU's mps2-an386,
mps2-an385 and mps3-an547; every tensor the kernels write must come out
identical. The host run must also equal what the TFLM interpreter itself
computed, which checks the runner and the array port.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tflm_train import plugin, qemu

from . import make_kernel_cases

REQUIRED = os.environ.get("TFLMT_REQUIRE_CORTEX_M4") == "1"
CASES = make_kernel_cases.all_cases()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kernel_runner")
    make_kernel_cases.write_cases(CASES, path / "kernel_cases.bin")
    return path


def _slices(outputs: bytes) -> dict[str, bytes]:
    result, position = {}, 0
    for case in CASES:
        result[case.name] = outputs[position:position + len(case.expected)]
        position += len(case.expected)
    assert position == len(outputs), "the runner wrote more or fewer bytes than the cases hold"
    return result


@pytest.fixture(scope="module")
def host_outputs(workdir) -> dict[str, bytes]:
    missing = qemu.missing_tools(cross=False)
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    build = qemu.build(workdir / "build-host", None, ["kernel_runner"])
    out = workdir / "host_outputs.bin"
    run = subprocess.run([str(build / "kernel_runner"), str(workdir / "kernel_cases.bin"), str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return _slices(out.read_bytes())


_device_outputs: dict[str, dict[str, bytes]] = {}


def device_outputs(core_name: str, workdir: Path) -> dict[str, bytes]:
    if core_name not in _device_outputs:
        missing = qemu.missing_tools()
        if missing:
            message = f"{', '.join(missing)} not installed (apt-get install gcc-arm-none-eabi qemu-system-arm)"
            if REQUIRED:
                pytest.fail(message)
            pytest.skip(message)
        core = qemu.CORES[core_name]
        build = qemu.build(workdir / f"build-{core_name}", core, ["kernel_runner"])
        rundir = workdir / core_name
        rundir.mkdir(exist_ok=True)
        (rundir / "kernel_cases.bin").write_bytes((workdir / "kernel_cases.bin").read_bytes())
        log = qemu.run_qemu(core, build / "kernel_runner", cwd=rundir)
        assert "all cases ran" in log, log
        _device_outputs[core_name] = _slices((rundir / "kernel_outputs.bin").read_bytes())
    return _device_outputs[core_name]


def test_cases_cover_every_kernel():
    covered = set().union(*(case.kernels for case in CASES))
    assert set(plugin.op_names()) <= covered, f"no kernel-runner case for {set(plugin.op_names()) - covered}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_host_runner_matches_tflm_interpreter(case, host_outputs):
    got = host_outputs[case.name]
    assert got == case.expected, case.first_difference(got)


@pytest.mark.parametrize("core", list(qemu.CORES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cortex_m_matches_x86(core, case, host_outputs, workdir):
    got = device_outputs(core, workdir)[case.name]
    want = host_outputs[case.name]
    assert got == want, make_kernel_cases.Case(case.name, b"", want, layout=case.layout).first_difference(got)


# Issue 13's budget for the kernel library on a Cortex-M4, in flash: the float
# training kernels a firmware registers for a converted model. The integer training
# kernels (convert --arithmetic int8; issue 17) are measured and bounded apart: a
# firmware registers one set or the other for a given model, and --gc-sections drops
# the kernels its resolver does not reference.
KERNEL_FLASH_BUDGET = 40 * 1024
INTEGER_KERNEL_OBJECTS = ("lora_int.cc.obj", "loss_int.cc.obj", "sgd_int.cc.obj")
INTEGER_KERNEL_FLASH_BUDGET = 12 * 1024
# Integer training through convolutions (conv bias, conv / pool input gradients): only
# a firmware training a convolutional model in integers registers them.
INTEGER_CONV_KERNEL_OBJECTS = ("conv_int_grad.cc.obj",)
INTEGER_CONV_KERNEL_FLASH_BUDGET = 10 * 1024  # measured 7,650 B code + 874 B read-only data
# Distillation's loss (convert --distill; issue 15): only a firmware training a model
# converted with --distill registers it, in place of TFLMT_LOSS.
DISTILL_KERNEL_OBJECTS = ("distill_loss.cc.obj",)
DISTILL_KERNEL_FLASH_BUDGET = 4 * 1024
OPTIONAL_KERNEL_OBJECTS = INTEGER_KERNEL_OBJECTS + INTEGER_CONV_KERNEL_OBJECTS + DISTILL_KERNEL_OBJECTS


def test_kernels_linked_into_cortex_m4_firmware_fit_the_flash_budget(workdir):
    """What the kernels add to a linked Cortex-M4 firmware (kernel_runner
    references every kernel), read from the linker's map: code plus read-only
    data, shared inline math counted once, unreferenced functions dropped."""
    device_outputs("cortex-m4", workdir)  # builds (and runs) the M4 kernel_runner
    map_file = workdir / "build-cortex-m4" / "kernel_runner.map"
    archive = "libtflm_train_kernels.a"
    floats = qemu.linked_flash_bytes(
        map_file, archive, lambda name: name not in OPTIONAL_KERNEL_OBJECTS)
    integers = qemu.linked_flash_bytes(map_file, archive, lambda name: name in INTEGER_KERNEL_OBJECTS)
    integer_convs = qemu.linked_flash_bytes(map_file, archive, lambda name: name in INTEGER_CONV_KERNEL_OBJECTS)
    distill = qemu.linked_flash_bytes(map_file, archive, lambda name: name in DISTILL_KERNEL_OBJECTS)
    print(f"float training kernels linked on Cortex-M4: {floats['text']:,} B code + {floats['rodata']:,} B "
          f"read-only data; integer training kernels: {integers['text']:,} + {integers['rodata']:,} B; "
          f"integer conv kernels: {integer_convs['text']:,} + {integer_convs['rodata']:,} B; "
          f"distillation loss: {distill['text']:,} + {distill['rodata']:,} B")
    assert floats["text"] > 10_000, floats  # the map was read: every kernel is in the runner
    assert integers["text"] > 1_000, integers  # the integer kernels are in the runner too
    assert floats["text"] + floats["rodata"] <= KERNEL_FLASH_BUDGET, floats
    assert integers["text"] + integers["rodata"] <= INTEGER_KERNEL_FLASH_BUDGET, integers
    assert integer_convs["text"] > 1_000, integer_convs
    assert integer_convs["text"] + integer_convs["rodata"] <= INTEGER_CONV_KERNEL_FLASH_BUDGET, integer_convs
    assert distill["text"] > 500, distill
    assert distill["text"] + distill["rodata"] <= DISTILL_KERNEL_FLASH_BUDGET, distill
