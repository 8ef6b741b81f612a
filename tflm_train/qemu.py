"""Builds firmware/ for a Cortex-M core and runs it under qemu-system-arm.

Used by the kernel-runner test (tests/device/) and `tflm-train device`. The
firmware sources live in the source checkout (firmware/, tflm_ops/), not in
the installed package: these helpers need a clone of the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE_DIR = ROOT / "firmware"
TOOLCHAIN_DIR = ROOT / "tflm_ops" / "cmake"


@dataclass(frozen=True)
class Core:
    name: str  # cortex-m4, ...; also the toolchain file's name
    board: str  # QEMU machine (-M)
    description: str

    @property
    def toolchain(self) -> Path:
        return TOOLCHAIN_DIR / f"{self.name}.cmake"


CORES = {
    "cortex-m4": Core("cortex-m4", "mps2-an386", "Cortex-M4F, single-precision FPU"),
    "cortex-m3": Core("cortex-m3", "mps2-an385", "Cortex-M3, no FPU (software float)"),
    "cortex-m55": Core("cortex-m55", "mps3-an547", "Cortex-M55, FPU + MVE"),
}


class DeviceError(RuntimeError):
    """A tool is missing, or a build or QEMU run failed (message says which)."""


def missing_tools(cross: bool = True) -> list[str]:
    tools = ["cmake", "g++"] + (["arm-none-eabi-g++", "qemu-system-arm"] if cross else [])
    return [t for t in tools if shutil.which(t) is None]


def _run(command: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise DeviceError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result


def build(build_dir: Path, core: Core | None, targets: list[str], definitions: dict[str, str] | None = None,
          source_dir: Path = FIRMWARE_DIR) -> Path:
    """Configures (once) and builds firmware/ for `core` (None: the host)."""
    if not FIRMWARE_DIR.is_dir():
        raise DeviceError(f"{FIRMWARE_DIR} not found: device builds need a clone of the tflm-train repository")
    build_dir = Path(build_dir)
    command = ["cmake", "-S", str(source_dir), "-B", str(build_dir)]
    if core is not None:
        command += ["--toolchain", str(core.toolchain)]
    command += [f"-D{k}={v}" for k, v in (definitions or {}).items()]
    _run(command, f"cmake configure ({core.name if core else 'host'})")
    _run(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2), "--target", *targets],
         f"build of {', '.join(targets)} ({core.name if core else 'host'})")
    return build_dir


def run_qemu(core: Core, elf: Path, cwd: Path, icount: bool = False, timeout: float = 600) -> str:
    """Runs `elf` on core's board; semihosting files resolve against `cwd`.

    With `icount`, QEMU's virtual clock advances one nanosecond per executed
    instruction (-icount shift=0): time read by the firmware is an
    instruction count, deterministic, and not a cycle count.
    """
    command = ["qemu-system-arm", "-M", core.board, "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    if icount:
        command[1:1] = ["-icount", "shift=0"]
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"QEMU ({core.board}) did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise DeviceError(f"QEMU ({core.board}) exited with {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def text_bytes(elf_or_archive: Path) -> int:
    """Total .text (flash) of an ELF file or static library (arm-none-eabi-size)."""
    out = _run(["arm-none-eabi-size", "-t", str(elf_or_archive)], "arm-none-eabi-size").stdout
    last = out.strip().splitlines()[-1]
    return int(re.split(r"\s+", last.strip())[0])


def linked_flash_bytes(map_file: Path, archive: str, objects: Callable[[str], bool] = lambda name: True) -> dict[str, int]:
    """What the objects of `archive` (a file name, e.g. libtflm_train_kernels.a)
    put into a linked firmware, from its GNU ld map: bytes of code (.text*)
    and of read-only data (.rodata*) that the link kept. Unlike the archive's
    size sum, inline functions shared by several objects count once and
    functions --gc-sections dropped do not count. `objects` selects the
    archive members counted (by object file name, e.g. "lora_int.cc.obj")."""
    text = map_file.read_text(errors="replace")
    marker = text.find("Linker script and memory map")
    if marker < 0:
        raise DeviceError(f"{map_file} is not a GNU ld map file")
    sizes = {"text": 0, "rodata": 0}
    pending = None  # an input section whose name was too long for its line
    for line in text[marker:].splitlines():
        fields = line.split()
        if line.startswith(" .") and len(fields) == 1:
            pending = fields[0]
            continue
        if pending is not None and len(fields) == 3 and line.startswith("  "):
            fields = [pending, *fields]
        pending = None
        if len(fields) != 4 or not line.startswith(" .") and not line.startswith("  "):
            continue
        section, address, size, source = fields
        if not (address.startswith("0x") and size.startswith("0x")) or f"{archive}(" not in source:
            continue
        if not objects(source.split(f"{archive}(", 1)[1].rstrip(")")):
            continue
        for kind in sizes:
            if section == f".{kind}" or section.startswith(f".{kind}."):
                sizes[kind] += int(size, 16)
    return sizes


if __name__ == "__main__":  # CI, before the package is installed: python3 tflm_train/qemu.py MAP ARCHIVE
    import sys

    measured = linked_flash_bytes(Path(sys.argv[1]), sys.argv[2])
    print(f"{sys.argv[2]} in {Path(sys.argv[1]).name}: {measured['text']:,} B code + {measured['rodata']:,} B "
          f"read-only data = {measured['text'] + measured['rodata']:,} B of flash")
