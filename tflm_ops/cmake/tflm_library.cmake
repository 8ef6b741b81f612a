# TFLM built from a user's source tree: the one place that lists TFLM's
# sources and finds its third-party headers. Used by firmware/ (the QEMU
# trainer), arduino/ (sketches linked outside the Arduino IDE) and tflm_ops/
# (examples/host_trainer).
#
#   include(<tflm-train>/tflm_ops/cmake/tflm_library.cmake)
#   tflmt_find_tflm_includes(TFLM_INCLUDES)   # needs TFLM_DIR
#   tflmt_add_tflm_library(tflmt_tflm
#     [KERNELS fully_connected softmax ...]   # TFLM kernels (+ <name>_common.cc)
#     [OPTIMIZED_FOR SIZE|SPEED]              # TFLM's KERNELS_OPTIMIZED_FOR_*
#     [DEFINITIONS TF_LITE_USE_CTIME ...])    # more private definitions
#
# TFLM_DIR: a tflite-micro checkout. FlatBuffers (the version its
# schema_generated.h asserts), gemmlowp and ruy (TFLM's reference kernels
# include ruy's profiler header) are found in TFLMT_EXTRA_INCLUDE_DIRS
# (;-separated include dirs) or where TFLM's Makefile downloads them.

# Sets <out_var> to TFLM's include dirs: the tree, then FlatBuffers,
# gemmlowp and ruy (cache entries TFLMT_*_INCLUDE), then the extra dirs.
function(tflmt_find_tflm_includes out_var)
  if(NOT TFLM_DIR)
    message(FATAL_ERROR "tflmt_find_tflm_includes: TFLM_DIR is not set")
  endif()
  set(downloads ${TFLM_DIR}/tensorflow/lite/micro/tools/make/downloads)
  find_path(TFLMT_FLATBUFFERS_INCLUDE flatbuffers/flatbuffers.h
            HINTS ${TFLMT_EXTRA_INCLUDE_DIRS} ${downloads}/flatbuffers/include
            CMAKE_FIND_ROOT_PATH_BOTH)
  find_path(TFLMT_GEMMLOWP_INCLUDE fixedpoint/fixedpoint.h
            HINTS ${TFLMT_EXTRA_INCLUDE_DIRS} ${downloads}/gemmlowp
            CMAKE_FIND_ROOT_PATH_BOTH)
  find_path(TFLMT_RUY_INCLUDE ruy/profiler/instrumentation.h
            HINTS ${TFLMT_EXTRA_INCLUDE_DIRS} ${downloads}/ruy
            CMAKE_FIND_ROOT_PATH_BOTH)
  foreach(header_dir TFLMT_FLATBUFFERS_INCLUDE TFLMT_GEMMLOWP_INCLUDE TFLMT_RUY_INCLUDE)
    if(NOT ${header_dir})
      message(FATAL_ERROR "TFLM_DIR is set but ${header_dir} was not found: add "
              "its include dir to TFLMT_EXTRA_INCLUDE_DIRS "
              "(<flatbuffers>/include;<gemmlowp>;<ruy>)")
    endif()
  endforeach()
  set(${out_var} ${TFLM_DIR} ${TFLMT_FLATBUFFERS_INCLUDE} ${TFLMT_GEMMLOWP_INCLUDE}
      ${TFLMT_RUY_INCLUDE} ${TFLMT_EXTRA_INCLUDE_DIRS} PARENT_SCOPE)
endfunction()

# A static library of TFLM as its Makefile builds it for a reference-kernel
# target (tools/make/sources.inc): no tests, test helpers, signal library or
# platform code. TF_LITE_STATIC_MEMORY is PUBLIC: it changes TfLiteTensor's
# layout, so everything that includes a TFLM header must agree.
function(tflmt_add_tflm_library target)
  cmake_parse_arguments(ARG "" "OPTIMIZED_FOR" "KERNELS;DEFINITIONS" ${ARGN})
  if(NOT ARG_OPTIMIZED_FOR)
    set(ARG_OPTIMIZED_FOR SIZE)
  endif()
  tflmt_find_tflm_includes(includes)
  set(micro ${TFLM_DIR}/tensorflow/lite/micro)
  file(GLOB sources CONFIGURE_DEPENDS
    ${micro}/*.cc
    ${micro}/arena_allocator/*.cc
    ${micro}/memory_planner/*.cc
    ${micro}/tflite_bridge/*.cc
    ${TFLM_DIR}/tensorflow/lite/core/api/*.cc
    ${TFLM_DIR}/tensorflow/lite/core/c/*.cc
    ${TFLM_DIR}/tensorflow/lite/kernels/*.cc
    ${TFLM_DIR}/tensorflow/lite/kernels/internal/*.cc
    ${TFLM_DIR}/tensorflow/lite/kernels/internal/reference/*.cc
    ${TFLM_DIR}/tensorflow/compiler/mlir/lite/core/api/*.cc
    ${TFLM_DIR}/tensorflow/compiler/mlir/lite/schema/*.cc)
  if(ARG_KERNELS)
    # Only the named kernels (and their shared helpers): a fraction of the
    # compile time of all of them.
    foreach(kernel ${ARG_KERNELS})
      foreach(file ${kernel}.cc ${kernel}_common.cc)
        if(EXISTS ${micro}/kernels/${file})
          list(APPEND sources ${micro}/kernels/${file})
        endif()
      endforeach()
    endforeach()
  else()
    file(GLOB kernels CONFIGURE_DEPENDS ${micro}/kernels/*.cc)
    list(APPEND sources ${kernels})
  endif()
  list(FILTER sources EXCLUDE REGEX "(_test|_test_common|_generated_data)\\.cc$")
  # Test and recording helpers a firmware never links.
  list(FILTER sources EXCLUDE REGEX
       "/micro/(test_helpers|test_helper_custom_ops|mock_micro_graph|fake_micro_context|recording_micro_allocator|micro_profiler)\\.cc$")

  add_library(${target} STATIC ${sources})
  target_include_directories(${target} SYSTEM PUBLIC ${includes})
  target_compile_definitions(${target} PUBLIC TF_LITE_STATIC_MEMORY
    PRIVATE TF_LITE_DISABLE_X86_NEON KERNELS_OPTIMIZED_FOR_${ARG_OPTIMIZED_FOR} ${ARG_DEFINITIONS})
  # -w: TFLM's code is not held to our warning flags.
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-fno-rtti -fno-exceptions -fno-threadsafe-statics> -w)
endfunction()
