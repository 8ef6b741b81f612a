// TFLMT_POOL_GRAD: backward pass of AVERAGE_POOL_2D and MAX_POOL_2D.
// (A fused activation is undone by TFLMT_ACTIVATION_GRAD before this op.)
// Average pooling needs only the geometry, so it reads no activation at all;
// max pooling finds the window's maximum from x and y. Runs only when the
// mode is "train".
//
// Inputs:  0 dy (float32), 1 x (max: the pool input; average: -1),
//          2 y (max: the pool output; average: -1), 3 mode
// Outputs: 0 dx (float32)
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "reference/pooling.h"

namespace tflmt {
namespace {

constexpr int kOutputGrad = 0;
constexpr int kInput = 1;
constexpr int kOutput = 2;
constexpr int kMode = 3;
constexpr int kInputGrad = 0;

struct OpData {
  PoolKind kind = PoolKind::kAverage;
  reference::ConvGeometry geometry;
  port::DataType value_type = port::DataType::kFloat32;  // max: x and y
};

bool ParseOptions(OptionsReader& reader, OpData* data) {
  const uint8_t kind = reader.U8();
  reference::ConvGeometry& g = data->geometry;
  g.batches = reader.I32();
  g.in_h = reader.I32();
  g.in_w = reader.I32();
  g.in_c = g.out_c = reader.I32();
  g.out_h = reader.I32();
  g.out_w = reader.I32();
  g.k_h = reader.I32();
  g.k_w = reader.I32();
  g.stride_h = reader.I32();
  g.stride_w = reader.I32();
  g.pad_top = reader.I32();
  g.pad_left = reader.I32();
  data->kind = static_cast<PoolKind>(kind);
  return kind <= static_cast<uint8_t>(PoolKind::kMax) && g.batches >= 1 &&
         g.in_h >= 1 && g.in_w >= 1 && g.in_c >= 1 && g.out_h >= 1 &&
         g.out_w >= 1 && g.k_h >= 1 && g.k_w >= 1 && g.stride_h >= 1 &&
         g.stride_w >= 1 && g.pad_top >= 0 && g.pad_left >= 0;
}

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(context, options, length, kPoolGradOpName,
                            kPoolGradOptionsVersion, ParseOptions);
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kPoolGradOpName;
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 4, 4, 1, 1));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  const reference::ConvGeometry& g = data->geometry;
  const int out_values = g.out_pixels() * g.out_c;
  const int in_values = g.in_pixels() * g.in_c;
  TFLMT_ENSURE_OK(RequireFloatInput(context, node, kOutputGrad, op, "dy", out_values));
  TFLMT_ENSURE_OK(RequireFloatOutput(context, node, kInputGrad, op, "dx", in_values));
  if (data->kind == PoolKind::kMax) {
    port::TensorInfo input, output;
    TFLMT_ENSURE_OK(RequireInput(context, node, kInput, op, "x", &input));
    TFLMT_ENSURE_OK(RequireInput(context, node, kOutput, op, "y", &output));
    TFLMT_ENSURE_MSG(input.type == output.type &&
                         (input.type == port::DataType::kFloat32 ||
                          input.type == port::DataType::kInt8 ||
                          input.type == port::DataType::kInt16) &&
                         input.FlatSize() == in_values &&
                         output.FlatSize() == out_values,
                     "%s: max pool x and y must match in type", op);
    data->value_type = input.type;
  }
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const float* dy = port::Input(context, node, kOutputGrad).As<float>();
  float* dx = port::Output(context, node, kInputGrad).As<float>();
  if (data.kind == PoolKind::kAverage) {
    reference::AveragePoolGrad(dy, data.geometry, dx);
    return port::Status::kOk;
  }
  const port::TensorView x = port::Input(context, node, kInput);
  const port::TensorView y = port::Input(context, node, kOutput);
  switch (data.value_type) {
    case port::DataType::kInt8:
      reference::MaxPoolGrad(dy, x.As<int8_t>(), y.As<int8_t>(), data.geometry, dx);
      break;
    case port::DataType::kInt16:
      reference::MaxPoolGrad(dy, x.As<int16_t>(), y.As<int16_t>(), data.geometry, dx);
      break;
    default:
      reference::MaxPoolGrad(dy, x.As<float>(), y.As<float>(), data.geometry, dx);
      break;
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kPoolGradKernel = {kPoolGradOpName, Init, nullptr,
                                         Prepare, Eval, nullptr};

}  // namespace tflmt
