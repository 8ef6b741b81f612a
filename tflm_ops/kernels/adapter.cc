// TFLMT_ADAPTER: a bottleneck adapter on a frozen layer's output,
//   a = act(D x + bd),  y = x + U a + bu,
// computed in float32. A quantized x gives a y quantized with the same
// parameters, so a fresh adapter (U = 0, bu = 0) passes x through unchanged.
//
// Inputs:  0 x (float32 / int8 / int16), 1 state
// Outputs: 0 y (x's type), 1 a (float32 [batches, bottleneck], for backward)
#include <new>

#include "kernels/adapter_common.h"
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/training_state.h"

namespace tflmt {
namespace {

constexpr int kInput = 0;
constexpr int kState = 1;
constexpr int kOutput = 0;
constexpr int kHidden = 1;

struct OpData {
  AdapterLayer layer;
  ActivationQuant input;
  ActivationQuant output;
  int batches = 0;
  int sum_scratch = -1;  // x + U a + bu before it is stored, [batches, features]
};

void* Init(port::Context* context, const char* options, size_t length) {
  void* memory = port::AllocatePersistent(context, sizeof(OpData));
  if (memory == nullptr) return nullptr;
  OpData* data = new (memory) OpData();
  return ParseAdapterLayer(options, length, &data->layer) ? data : nullptr;
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_ADAPTER: bad options");
  TFLMT_ENSURE(port::NumInputs(node) == 2 && port::NumOutputs(node) == 2);
  port::TensorInfo input, state, output, hidden;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kInput, &input));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kState, &state));
  TFLMT_ENSURE_OK(port::OutputInfo(context, node, kOutput, &output));
  TFLMT_ENSURE_OK(port::OutputInfo(context, node, kHidden, &hidden));
  TFLMT_ENSURE_OK(PrepareAdapterState(state, data->layer));
  TFLMT_ENSURE_OK(ActivationQuantOf(input, &data->input));
  TFLMT_ENSURE_OK(ActivationQuantOf(output, &data->output));
  const int features = data->layer.features;
  TFLMT_ENSURE_MSG(input.FlatSize() % features == 0 &&
                       output.FlatSize() == input.FlatSize(),
                   "TFLMT_ADAPTER: input and output must hold rows of %d",
                   features);
  data->batches = input.FlatSize() / features;
  TFLMT_ENSURE(hidden.type == port::DataType::kFloat32 &&
               hidden.FlatSize() == data->batches * data->layer.bottleneck);
  return port::RequestScratch(context, sizeof(float) * input.FlatSize(),
                              &data->sum_scratch);
}

port::Status Eval(port::Context* context, port::Node* node) {
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const AdapterLayer& layer = data.layer;
  const int n = data.batches * layer.features;
  const reference::ValuesRef x =
      ValuesOf(port::Input(context, node, kInput), data.input);
  float* params =
      state::Params(port::Input(context, node, kState).As<uint8_t>());
  float* sum = static_cast<float*>(port::Scratch(context, data.sum_scratch));
  reference::AdapterForward(x, AdapterWeightsIn(layer, params),
                            layer.activation, data.batches, layer.features,
                            layer.bottleneck,
                            port::Output(context, node, kHidden).As<float>(),
                            sum);
  for (int i = 0; i < n; ++i) sum[i] += x[i];
  StoreValues(sum, n, data.output, port::Output(context, node, kOutput));
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kAdapterKernel = {kAdapterOpName, Init, nullptr,
                                  Prepare, Eval, nullptr};

}  // namespace tflmt
