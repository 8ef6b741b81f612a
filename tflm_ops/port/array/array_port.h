// port.h over plain arrays: the third backend, for kernel tests without TFLM.
//
// A test runner (firmware/kernel_runner/) owns every tensor as a flat buffer,
// calls the kernels' init/prepare/eval itself, and hands memory out of one
// static arena, the way TFLM's kernel tests drive a kernel with arrays. No
// TFLM header is included anywhere in this backend, so the same runner
// builds for the host and for bare-metal Cortex-M.
#ifndef TFLM_OPS_PORT_ARRAY_ARRAY_PORT_H_
#define TFLM_OPS_PORT_ARRAY_ARRAY_PORT_H_

#include <cstddef>
#include <cstdint>

#include "port/port.h"

namespace tflmt {
namespace array_port {

// One tensor of a test case. `data` is owned by the runner (a constant may
// point into the case file).
struct Tensor {
  port::TensorInfo info;  // shape, type, quantization, variable, constant
  void* data = nullptr;
};

// Bump allocator over a caller-provided buffer. Kernels' persistent data and
// scratch buffers come from here; nothing is ever freed except by Reset.
struct Arena {
  uint8_t* base = nullptr;
  size_t capacity = 0;
  size_t used = 0;

  void* Allocate(size_t bytes);  // 16-byte aligned; null when full
};

constexpr int kMaxScratch = 32;

}  // namespace array_port
}  // namespace tflmt

// The opaque types of port.h, defined here for this backend only (a build with
// this port never sees TFLM's definitions).
struct TfLiteContext {
  tflmt::array_port::Tensor* tensors = nullptr;
  int num_tensors = 0;
  tflmt::array_port::Arena* arena = nullptr;
  void* scratch[tflmt::array_port::kMaxScratch] = {};
  size_t scratch_bytes[tflmt::array_port::kMaxScratch] = {};
  int num_scratch = 0;
};

struct TfLiteNode {
  const int32_t* inputs = nullptr;  // tensor indices; -1: optional input left out
  int num_inputs = 0;
  const int32_t* outputs = nullptr;
  int num_outputs = 0;
  void* user_data = nullptr;
};

#endif  // TFLM_OPS_PORT_ARRAY_ARRAY_PORT_H_
