# Cross-compiles for a Cortex-M3 (no FPU: float arithmetic in software), e.g.
# QEMU's mps2-an385:
#   cmake -S tflm_ops -B build/m3 --toolchain $PWD/tflm_ops/cmake/cortex-m3.cmake
set(CMAKE_SYSTEM_PROCESSOR cortex-m3)
set(TFLMT_CPU_FLAGS "-mcpu=cortex-m3 -mfloat-abi=soft")
include(${CMAKE_CURRENT_LIST_DIR}/arm-none-eabi.cmake)
