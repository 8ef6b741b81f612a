"""Memory of the boards people run TFLM on (datasheet values, not measured).

SRAM is what the tensor arena (activations, training state, scratch) must
fit in, next to the firmware's own stack and data; flash holds the model and
the code (TFLM and tflm-train's kernels: the CI prints their Cortex-M4 size).
"""

from __future__ import annotations

from dataclasses import dataclass

KB = 1024
MB = 1024 * 1024


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    sram_bytes: int
    flash_bytes: int


BOARDS = {
    board.name: board
    for board in (
        Board("nano33ble", "Arduino Nano 33 BLE Sense (nRF52840, Cortex-M4F 64 MHz)", 256 * KB, 1 * MB),
        Board("portenta-h7", "Arduino Portenta H7 (STM32H747, Cortex-M7 480 MHz)", 1 * MB, 2 * MB),
        Board("nicla-vision", "Arduino Nicla Vision (STM32H747, Cortex-M7 480 MHz)", 1 * MB, 2 * MB),
        Board("esp32-s3", "ESP32-S3 (Xtensa LX7, internal SRAM; 8 MB flash on DevKitC-1-N8)", 512 * KB, 8 * MB),
        Board("pico", "Raspberry Pi Pico (RP2040, Cortex-M0+ 133 MHz)", 264 * KB, 2 * MB),
        Board("stm32f746-disco", "STM32F746G-DISCO (Cortex-M7 216 MHz)", 320 * KB, 1 * MB),
        # SSE-300 on MPS3: DTCM 4 x 128 KB + ISRAM 2 x 1 MB for data; the 8 MB
        # QSPI region holds code and models.
        Board("corstone-300", "Arm Corstone-300 (SSE-300, Cortex-M55; MPS3 / FVP)", 2 * MB + 512 * KB, 8 * MB),
    )
}


def board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r} (boards: {', '.join(BOARDS)})") from None
