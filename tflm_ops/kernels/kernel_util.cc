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

port::Status RequestFloatCopy(port::Context* context,
                              const ActivationQuant& quant, int count,
                              int* scratch_index) {
  *scratch_index = -1;
  if (quant.is_float()) return port::Status::kOk;
  return port::RequestScratch(context, sizeof(float) * count, scratch_index);
}

const float* FloatValues(port::Context* context, const port::TensorView& view,
                         const ActivationQuant& quant, int count,
                         int scratch_index) {
  if (quant.is_float()) return view.As<float>();
  float* out = static_cast<float*>(port::Scratch(context, scratch_index));
  if (quant.type == port::DataType::kInt8) {
    const int8_t* q = view.As<int8_t>();
    for (int i = 0; i < count; ++i) out[i] = quant.Dequantize(q[i]);
  } else {
    const int16_t* q = view.As<int16_t>();
    for (int i = 0; i < count; ++i) out[i] = quant.Dequantize(q[i]);
  }
  return out;
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
                 const port::TensorView& output) {
  if (quant.is_float()) {
    float* out = output.As<float>();
    for (int i = 0; i < count; ++i) out[i] = values[i];
  } else if (quant.type == port::DataType::kInt8) {
    Quantize(values, count, quant, -128, 127, output.As<int8_t>());
  } else {
    Quantize(values, count, quant, -32768, 32767, output.As<int16_t>());
  }
}

}  // namespace tflmt
