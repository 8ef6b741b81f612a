#include "kernels/kernel_util.h"

#include "reference/quantization.h"

namespace tflmt {

bool ReadDims(OptionsReader& reader, int rank, reference::Dims* dims) {
  dims->rank = rank;
  bool ok = rank >= 1 && rank <= reference::kMaxDims;
  for (int i = 0; i < reference::kMaxDims; ++i) {
    dims->d[i] = reader.I32();
    if (i < rank) {
      ok = ok && dims->d[i] >= 1;
    } else {
      dims->d[i] = 1;
    }
  }
  return ok;
}

port::Status CheckOpData(const void* data, const char* op_name) {
  TFLMT_ENSURE_MSG(data != nullptr, "%s: bad options (see the message above)",
                   op_name);
  return port::Status::kOk;
}

port::Status CheckArity(const port::Node* node, const char* op_name,
                        int min_inputs, int max_inputs, int min_outputs,
                        int max_outputs) {
  const int inputs = port::NumInputs(node), outputs = port::NumOutputs(node);
  TFLMT_ENSURE_MSG(inputs >= min_inputs && inputs <= max_inputs,
                   "%s: has %d inputs, expected %d..%d", op_name, inputs,
                   min_inputs, max_inputs);
  TFLMT_ENSURE_MSG(outputs >= min_outputs && outputs <= max_outputs,
                   "%s: has %d outputs, expected %d..%d", op_name, outputs,
                   min_outputs, max_outputs);
  return port::Status::kOk;
}

port::Status RequireInput(port::Context* context, const port::Node* node,
                          int index, const char* op_name, const char* role,
                          port::TensorInfo* info) {
  TFLMT_ENSURE_MSG(port::HasInput(node, index), "%s: input %d (%s) is missing",
                   op_name, index, role);
  TFLMT_ENSURE_MSG(
      port::InputInfo(context, node, index, info) == port::Status::kOk,
      "%s: input %d (%s) cannot be used", op_name, index, role);
  return port::Status::kOk;
}

port::Status RequireOutput(port::Context* context, const port::Node* node,
                           int index, const char* op_name, const char* role,
                           port::TensorInfo* info) {
  TFLMT_ENSURE_MSG(index >= 0 && index < port::NumOutputs(node),
                   "%s: output %d (%s) is missing", op_name, index, role);
  TFLMT_ENSURE_MSG(
      port::OutputInfo(context, node, index, info) == port::Status::kOk,
      "%s: output %d (%s) is missing or cannot be used", op_name, index, role);
  return port::Status::kOk;
}

port::Status CheckTensor(const port::TensorInfo& info, const char* op_name,
                         const char* role, port::DataType type, int values) {
  TFLMT_ENSURE_MSG(info.type == type, "%s: %s has type %d, expected %d",
                   op_name, role, static_cast<int>(info.type),
                   static_cast<int>(type));
  TFLMT_ENSURE_MSG(values < 0 || info.FlatSize() == values,
                   "%s: %s holds %d values, expected %d", op_name, role,
                   info.FlatSize(), values);
  return port::Status::kOk;
}

port::Status RequireFloatInput(port::Context* context, const port::Node* node,
                               int index, const char* op_name, const char* role,
                               int values, port::TensorInfo* info) {
  port::TensorInfo local;
  port::TensorInfo* target = info != nullptr ? info : &local;
  TFLMT_ENSURE_OK(RequireInput(context, node, index, op_name, role, target));
  return CheckTensor(*target, op_name, role, port::DataType::kFloat32, values);
}

port::Status RequireFloatOutput(port::Context* context, const port::Node* node,
                                int index, const char* op_name,
                                const char* role, int values,
                                port::TensorInfo* info) {
  port::TensorInfo local;
  port::TensorInfo* target = info != nullptr ? info : &local;
  TFLMT_ENSURE_OK(RequireOutput(context, node, index, op_name, role, target));
  return CheckTensor(*target, op_name, role, port::DataType::kFloat32, values);
}

port::Status CheckModeInput(port::Context* context, const port::Node* node,
                            int index, const char* op_name) {
  port::TensorInfo mode;
  TFLMT_ENSURE_OK(RequireInput(context, node, index, op_name, "mode", &mode));
  TFLMT_ENSURE_MSG(mode.type == port::DataType::kInt32 && mode.FlatSize() >= 1,
                   "%s: mode must be int32 with a value", op_name);
  return port::Status::kOk;
}

port::Status PrepareLossTensors(port::Context* context, port::Node* node,
                                const char* op_name, ActivationQuant* quant,
                                LossTensors* tensors) {
  TFLMT_ENSURE_MSG(port::NumInputs(node) == 3 && port::NumOutputs(node) == 2,
                   "%s: takes prediction, target and mode; gives loss and its "
                   "gradient",
                   op_name);
  port::TensorInfo mode, loss, grad;
  port::TensorInfo& prediction = tensors->prediction;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, 0, &prediction));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, 1, &tensors->target));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, 2, &mode));
  TFLMT_ENSURE_MSG(mode.type == port::DataType::kInt32 && mode.FlatSize() == 1,
                   "%s: mode must be int32 [1]", op_name);
  TFLMT_ENSURE_OK(port::OutputInfo(context, node, 0, &loss));
  TFLMT_ENSURE_OK(port::OutputInfo(context, node, 1, &grad));
  TFLMT_ENSURE_OK(ActivationQuantOf(prediction, quant));
  TFLMT_ENSURE_MSG(prediction.rank >= 1 && prediction.FlatSize() > 0,
                   "%s: the prediction must have at least one value", op_name);
  tensors->values = prediction.dims[prediction.rank - 1];
  tensors->batches = prediction.FlatSize() / tensors->values;
  TFLMT_ENSURE(loss.type == port::DataType::kFloat32 && loss.FlatSize() == 1);
  TFLMT_ENSURE(grad.type == port::DataType::kFloat32 &&
               grad.FlatSize() == prediction.FlatSize());
  return port::Status::kOk;
}

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

port::Status ActivationQuantOf(const port::TensorInfo& info,
                               const char* op_name, const char* role,
                               ActivationQuant* quant) {
  TFLMT_ENSURE_MSG(ActivationQuantOf(info, quant) == port::Status::kOk,
                   "%s: %s must be float32, or int8 / int16 with one scale",
                   op_name, role);
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
