# Shared part of the Cortex-M toolchain files (cortex-m3/m4/m55.cmake), which
# set TFLMT_CPU_FLAGS and include this. Debian's gcc-arm-none-eabi + newlib.
set(CMAKE_SYSTEM_NAME Generic)

set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
set(CMAKE_AR arm-none-eabi-ar)
set(CMAKE_RANLIB arm-none-eabi-ranlib)
# No OS to run test executables on while configuring.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

# -ffp-contract=off: no fused multiply-add (vfma/vfms). Fused and separate
# multiply-adds round differently, and the x86 build (the reference the
# device runs are compared with byte for byte) has no FMA.
set(TFLMT_COMMON_FLAGS "${TFLMT_CPU_FLAGS} -mthumb -ffp-contract=off")
set(CMAKE_C_FLAGS_INIT "${TFLMT_COMMON_FLAGS} -ffunction-sections -fdata-sections")
set(CMAKE_CXX_FLAGS_INIT "${TFLMT_COMMON_FLAGS} -ffunction-sections -fdata-sections")
set(CMAKE_ASM_FLAGS_INIT "${TFLMT_COMMON_FLAGS}")
# Executables without an OS: newlib-nano with stub system calls. Firmware that
# prints through semihosting (firmware/) replaces these with rdimon.
set(CMAKE_EXE_LINKER_FLAGS_INIT "--specs=nano.specs --specs=nosys.specs -Wl,--gc-sections")

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
