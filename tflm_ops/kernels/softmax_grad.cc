// TFLMT_SOFTMAX_GRAD: backward pass of SOFTMAX (with its beta) from the
// forward output y, over the last axis:  dx = beta * y * (dy - sum(dy * y)).
// Runs only when the mode is "train".
//
// Inputs:  0 dy (float32), 1 y (float32 / int8 / int16), 2 mode
// Outputs: 0 dx (float32)
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
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
  return InitOpData<OpData>(context, options, length, kSoftmaxGradOpName,
                            kSoftmaxGradOptionsVersion,
                            [](OptionsReader& reader, OpData* data) {
                              data->beta = reader.F32();
                              return true;
                            });
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kSoftmaxGradOpName;
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 3, 3, 1, 1));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  port::TensorInfo output;
  TFLMT_ENSURE_OK(RequireInput(context, node, kOutput, op, "y", &output));
  TFLMT_ENSURE_OK(ActivationQuantOf(output, op, "y", &data->output));
  TFLMT_ENSURE_MSG(output.rank >= 1 && output.dims[output.rank - 1] >= 1,
                   "%s: y must have a last axis", op);
  data->depth = output.dims[output.rank - 1];
  data->rows = output.FlatSize() / data->depth;
  TFLMT_ENSURE_OK(RequireFloatInput(context, node, kOutputGrad, op, "dy",
                                    output.FlatSize()));
  TFLMT_ENSURE_OK(RequireFloatOutput(context, node, kInputGrad, op, "dx",
                                     output.FlatSize()));
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
