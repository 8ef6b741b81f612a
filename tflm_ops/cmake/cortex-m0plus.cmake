# Cross-compiles for a Cortex-M0+ (ARMv6-M: no FPU, soft-float ABI), e.g. the
# RP2040 of the Raspberry Pi Pico. Every float operation becomes a call into
# libgcc's soft-float helpers (__aeabi_f*, __aeabi_d*, __addsf3, ...), which
# tests/test_integer_m0plus.py uses to prove the integer training kernels
# (--arithmetic int8) contain none:
#   cmake -S tflm_ops -B build/m0plus --toolchain $PWD/tflm_ops/cmake/cortex-m0plus.cmake
set(CMAKE_SYSTEM_PROCESSOR cortex-m0plus)
set(TFLMT_CPU_FLAGS "-mcpu=cortex-m0plus -mfloat-abi=soft")
include(${CMAKE_CURRENT_LIST_DIR}/arm-none-eabi.cmake)
