// TFLMT_ADD_GRADS: dx = g0 + g1 + ... for a tensor read by several operators,
// whose gradient arrives in parts. A custom op (not stock ADD) so that, like
// every backward op, it does nothing unless the mode is "train".
//
// Inputs:  0 mode, 1.. gradient parts (float32, same number of values)
// Outputs: 0 their sum (float32)
#include <new>

#include "kernels/kernels.h"
#include "kernels/options.h"

namespace tflmt {
namespace {

constexpr int kMode = 0;
constexpr int kFirstPart = 1;
constexpr int kSum = 0;

struct OpData {
  int size = 0;  // values per gradient
};

void* Init(port::Context* context, const char* options, size_t length) {
  OptionsReader reader(options, length);
  if (!reader.ReadVersion() || !reader.Finished()) {
    port::Log("TFLMT_ADD_GRADS: options version is not %d", kOptionsVersion);
    return nullptr;
  }
  void* memory = port::AllocatePersistent(context, sizeof(OpData));
  return memory != nullptr ? new (memory) OpData() : nullptr;
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_ADD_GRADS: bad options");
  TFLMT_ENSURE(port::NumInputs(node) >= 3 && port::NumOutputs(node) == 1);
  port::TensorInfo sum;
  TFLMT_ENSURE_OK(port::OutputInfo(context, node, kSum, &sum));
  data->size = sum.FlatSize();
  TFLMT_ENSURE(sum.type == port::DataType::kFloat32);
  for (int i = kFirstPart; i < port::NumInputs(node); ++i) {
    port::TensorInfo part;
    TFLMT_ENSURE_OK(port::InputInfo(context, node, i, &part));
    TFLMT_ENSURE_MSG(part.type == port::DataType::kFloat32 &&
                         part.FlatSize() == sum.FlatSize(),
                     "TFLMT_ADD_GRADS: parts must be float32 of %d values",
                     sum.FlatSize());
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
