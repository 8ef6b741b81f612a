# Cross-compiles for a Cortex-M4F (single-precision FPU, hard-float ABI), e.g.
# QEMU's mps2-an386:
#   cmake -S tflm_ops -B build/m4 --toolchain $PWD/tflm_ops/cmake/cortex-m4.cmake
set(CMAKE_SYSTEM_PROCESSOR cortex-m4)
set(TFLMT_CPU_FLAGS "-mcpu=cortex-m4 -mfloat-abi=hard -mfpu=fpv4-sp-d16")
include(${CMAKE_CURRENT_LIST_DIR}/arm-none-eabi.cmake)
