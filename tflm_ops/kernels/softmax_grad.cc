// TFLMT_SOFTMAX_GRAD: backward pass of SOFTMAX (with its beta) from the
// forward output y, over the last axis:  dx = beta * y * (dy - sum(dy * y)).
// Runs only when the mode is "train".
//
// Inputs:  0 dy (float32), 1 y (float32 / int8 / int16), 2 mode
// Outputs: 0 dx (float32)
#include <new>

#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/options.h"
#include "reference/softmax.h"

namespace tflmt {
namespace {

constexpr int kOutputGrad = 0;
constexpr int kOutput = 1;
constexpr int kMode = 2;
constexpr int kInputGrad = 0;

struct OpData {
  float beta = 1.0f;
  ActivationQuant output;
  int rows = 0;
  int depth = 0;
};

void* Init(port::Context* context, const char* options, size_t length) {
  OptionsReader reader(options, length);
  const bool version_ok = reader.ReadVersion();
  const float beta = reader.F32();
  if (!version_ok || !reader.Finished()) {
    port::Log("TFLMT_SOFTMAX_GRAD: bad options");
    return nullptr;
  }
  void* memory = port::AllocatePersistent(context, sizeof(OpData));
  if (memory == nullptr) return nullptr;
  OpData* data = new (memory) OpData();
  data->beta = beta;
  return data;
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_SOFTMAX_GRAD: bad options");
  TFLMT_ENSURE(port::NumInputs(node) == 3 && port::NumOutputs(node) == 1);
  port::TensorInfo output_grad, output, input_grad;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kOutputGrad, &output_grad));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kOutput, &output));
  TFLMT_ENSURE_OK(port::OutputInfo(context, node, kInputGrad, &input_grad));
  TFLMT_ENSURE_OK(ActivationQuantOf(output, &data->output));
  TFLMT_ENSURE(output.rank >= 1);
  data->depth = output.dims[output.rank - 1];
  data->rows = output.FlatSize() / data->depth;
  TFLMT_ENSURE(output_grad.type == port::DataType::kFloat32 &&
               output_grad.FlatSize() == output.FlatSize());
  TFLMT_ENSURE(input_grad.type == port::DataType::kFloat32 &&
               input_grad.FlatSize() == output.FlatSize());
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const reference::ValuesRef y =
      ValuesOf(port::Input(context, node, kOutput), data.output);
  reference::SoftmaxGrad(port::Input(context, node, kOutputGrad).As<float>(),
                         y, data.beta, data.rows, data.depth,
                         port::Output(context, node, kInputGrad).As<float>());
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kSoftmaxGradKernel = {kSoftmaxGradOpName, Init, nullptr,
                                      Prepare, Eval, nullptr};

}  // namespace tflmt
