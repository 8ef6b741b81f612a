// TFLMT_ACTIVATION_GRAD: backward pass of RELU, RELU6, RELU_N1_TO_1, TANH
// and LOGISTIC (standalone ops, or the fused activation of an ADD), computed
// from the forward output y, float32 or quantized with its own parameters:
//   dx = dy * activation'(y)
// Runs only when the mode is "train".
//
// Inputs:  0 dy (float32), 1 y, 2 mode
// Outputs: 0 dx (float32)
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "reference/fully_connected.h"

namespace tflmt {
namespace {

constexpr int kOutputGrad = 0;
constexpr int kOutput = 1;
constexpr int kMode = 2;
constexpr int kInputGrad = 0;

struct OpData {
  reference::Activation activation = reference::Activation::kNone;
  ActivationQuant output;
  int size = 0;
};

bool Supported(int kind) {
  using reference::Activation;
  const Activation a = static_cast<Activation>(kind);
  return a == Activation::kRelu || a == Activation::kRelu6 ||
         a == Activation::kReluN1To1 || a == Activation::kTanh ||
         a == Activation::kLogistic;
}

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(
      context, options, length, kActivationGradOpName,
      kActivationGradOptionsVersion, [](OptionsReader& reader, OpData* data) {
        const int kind = reader.U8();
        data->activation = static_cast<reference::Activation>(kind);
        return Supported(kind);
      });
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kActivationGradOpName;
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 3, 3, 1, 1));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  port::TensorInfo output;
  TFLMT_ENSURE_OK(RequireInput(context, node, kOutput, op, "y", &output));
  TFLMT_ENSURE_OK(ActivationQuantOf(output, op, "y", &data->output));
  data->size = output.FlatSize();
  TFLMT_ENSURE_OK(RequireFloatInput(context, node, kOutputGrad, op, "dy", data->size));
  TFLMT_ENSURE_OK(RequireFloatOutput(context, node, kInputGrad, op, "dx", data->size));
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const reference::ValuesRef y =
      ValuesOf(port::Input(context, node, kOutput), data.output);
  reference::ActivationGradFloat(
      data.activation, port::Input(context, node, kOutputGrad).As<float>(), y,
      data.size, port::Output(context, node, kInputGrad).As<float>());
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kActivationGradKernel = {
    kActivationGradOpName, Init, nullptr, Prepare, Eval, nullptr};

}  // namespace tflmt
