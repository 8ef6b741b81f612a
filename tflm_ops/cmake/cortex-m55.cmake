# Cross-compiles for a Cortex-M55 (Armv8.1-M: FPU and the MVE vector
# extension, hard-float ABI), e.g. QEMU's mps3-an547:
#   cmake -S tflm_ops -B build/m55 --toolchain $PWD/tflm_ops/cmake/cortex-m55.cmake
set(CMAKE_SYSTEM_PROCESSOR cortex-m55)
set(TFLMT_CPU_FLAGS "-mcpu=cortex-m55 -mfloat-abi=hard")
include(${CMAKE_CURRENT_LIST_DIR}/arm-none-eabi.cmake)
