#include "kernels/kernel_util.h"

#include "reference/quantization.h"

namespace tflmt {

port::Status ActivationQuantOf(const port::TensorInfo& info,
                               ActivationQuant* quant) {
  quant->type = info.type;
  if (info.type == port::DataType::kFloat32) {
    quant->scale = 1.0f;
    quant->zero_point = 0;
    return port::Status::kOk;
  }
  TFLMT_ENSURE_MSG(info.type == port::DataType::kInt8 ||
                       info.type == port::DataType::kInt16,
                   "tflm-train: activations of type %d are not supported "
                   "(float32, int8 and int16 are)",
                   static_cast<int>(info.type));
  TFLMT_ENSURE_MSG(info.quant.scale > 0.0f && info.quant.num_channels <= 1,
                   "tflm-train: quantized activation without a per-tensor "
                   "scale");
  quant->scale = info.quant.scale;
  quant->zero_point = info.quant.zero_point;
  return port::Status::kOk;
}

reference::ValuesRef ValuesOf(const port::TensorView& view,
                              const ActivationQuant& quant) {
  reference::ValuesRef values;
  if (quant.type == port::DataType::kInt8) {
    values.i8 = view.As<int8_t>();
  } else if (quant.type == port::DataType::kInt16) {
    values.i16 = view.As<int16_t>();
  } else {
    values.f32 = view.As<float>();
  }
  values.scale = quant.scale;
  values.zero_point = quant.zero_point;
  return values;
}

namespace {
template <typename T>
void Quantize(const float* values, int count, const ActivationQuant& quant,
              int32_t qmin, int32_t qmax, T* out) {
  for (int i = 0; i < count; ++i) {
    out[i] = static_cast<T>(reference::QuantizeValue(
        values[i], quant.scale, quant.zero_point, qmin, qmax));
  }
}
}  // namespace

void StoreValues(const float* values, int count, const ActivationQuant& quant,
                 const port::TensorView& output, int first) {
  if (quant.is_float()) {
    float* out = output.As<float>() + first;
    for (int i = 0; i < count; ++i) out[i] = values[i];
  } else if (quant.type == port::DataType::kInt8) {
    Quantize(values, count, quant, -128, 127, output.As<int8_t>() + first);
  } else {
    Quantize(values, count, quant, -32768, 32767, output.As<int16_t>() + first);
  }
}

}  // namespace tflmt
