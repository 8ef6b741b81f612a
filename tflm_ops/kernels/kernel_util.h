// Helpers every tflm-train kernel uses: the quantization of an activation
// (copied in Prepare, used in Eval) and float views of quantized tensors.
#ifndef TFLM_OPS_KERNELS_KERNEL_UTIL_H_
#define TFLM_OPS_KERNELS_KERNEL_UTIL_H_

#include <cstdint>

#include "port/port.h"
#include "reference/fully_connected.h"

namespace tflmt {

// How to turn an activation tensor's values into real numbers.
struct ActivationQuant {
  port::DataType type = port::DataType::kFloat32;
  float scale = 1.0f;
  int32_t zero_point = 0;

  bool is_float() const { return type == port::DataType::kFloat32; }
  float Dequantize(int32_t q) const { return scale * (q - zero_point); }
};

// float32, int8 or int16 activations; anything else is refused in Prepare.
port::Status ActivationQuantOf(const port::TensorInfo& info,
                               ActivationQuant* quant);

// The tensor's real values, read in place (int8 / int16 dequantized per
// element): no float copy in the arena.
reference::ValuesRef ValuesOf(const port::TensorView& view,
                              const ActivationQuant& quant);

// Writes real values into a float32 or quantized (int8/int16) output, at
// elements first .. first + count - 1.
void StoreValues(const float* values, int count, const ActivationQuant& quant,
                 const port::TensorView& output, int first = 0);

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_KERNEL_UTIL_H_
