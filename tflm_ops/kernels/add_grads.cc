// TFLMT_ADD_GRADS: dx = g0 + g1 + ... for a tensor read by several operators,
// whose gradient arrives in parts. A custom op (not stock ADD) so that, like
// every backward op, it does nothing unless the mode is "train".
//
// Inputs:  0 mode, 1.. gradient parts (float32, same number of values)
// Outputs: 0 their sum (float32)
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"

namespace tflmt {
namespace {

constexpr int kMode = 0;
constexpr int kFirstPart = 1;
constexpr int kSum = 0;

struct OpData {
  int size = 0;  // values per gradient
};

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(context, options, length, kAddGradsOpName,
                            kAddGradsOptionsVersion);
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kAddGradsOpName;
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 3, 1 << 16, 1, 1));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  port::TensorInfo sum;
  TFLMT_ENSURE_OK(RequireFloatOutput(context, node, kSum, op, "sum", -1, &sum));
  data->size = sum.FlatSize();
  for (int i = kFirstPart; i < port::NumInputs(node); ++i) {
    TFLMT_ENSURE_OK(RequireFloatInput(context, node, i, op, "gradient part",
                                      data->size));
  }
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const int n = static_cast<const OpData*>(port::UserData(node))->size;
  float* out = port::Output(context, node, kSum).As<float>();
  const float* first = port::Input(context, node, kFirstPart).As<float>();
  for (int k = 0; k < n; ++k) out[k] = first[k];
  for (int i = kFirstPart + 1; i < port::NumInputs(node); ++i) {
    const float* part = port::Input(context, node, i).As<float>();
    for (int k = 0; k < n; ++k) out[k] += part[k];
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kAddGradsKernel = {kAddGradsOpName, Init, nullptr,
                                         Prepare, Eval, nullptr};

}  // namespace tflmt
