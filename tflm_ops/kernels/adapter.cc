// TFLMT_ADAPTER: a bottleneck adapter on a frozen layer's output,
//   a = act(D x + bd),  y = x + U a + bu,
// computed in float32. A quantized x gives a y quantized with the same
// parameters, so a fresh adapter (U = 0, bu = 0) passes x through unchanged.
//
// Inputs:  0 x (float32 / int8 / int16), 1 state
// Outputs: 0 y (x's type), 1 a (float32 [batches, bottleneck], kept for the
//          backward op; absent when the converter has it recompute a)
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
  bool keeps_hidden = false;
  int row_scratch = -1;  // y of one row before it is stored [features], then
                         // a of that row [bottleneck] when a is not kept
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
  TFLMT_ENSURE(port::NumInputs(node) == 2 &&
               (port::NumOutputs(node) == 1 || port::NumOutputs(node) == 2));
  data->keeps_hidden = port::NumOutputs(node) == 2;
  port::TensorInfo input, state, output;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kInput, &input));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kState, &state));
  TFLMT_ENSURE_OK(port::OutputInfo(context, node, kOutput, &output));
  TFLMT_ENSURE_OK(PrepareAdapterState(state, data->layer));
  TFLMT_ENSURE_OK(ActivationQuantOf(input, &data->input));
  TFLMT_ENSURE_OK(ActivationQuantOf(output, &data->output));
  const AdapterLayer& layer = data->layer;
  TFLMT_ENSURE_MSG(input.FlatSize() % layer.features == 0 &&
                       output.FlatSize() == input.FlatSize(),
                   "TFLMT_ADAPTER: input and output must hold rows of %d",
                   layer.features);
  data->batches = input.FlatSize() / layer.features;
  if (data->keeps_hidden) {
    port::TensorInfo hidden;
    TFLMT_ENSURE_OK(port::OutputInfo(context, node, kHidden, &hidden));
    TFLMT_ENSURE(hidden.type == port::DataType::kFloat32 &&
                 hidden.FlatSize() == data->batches * layer.bottleneck);
  }
  const int row_floats =
      layer.features + (data->keeps_hidden ? 0 : layer.bottleneck);
  return port::RequestScratch(context, sizeof(float) * row_floats,
                              &data->row_scratch);
}

port::Status Eval(port::Context* context, port::Node* node) {
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const AdapterLayer& layer = data.layer;
  const reference::ValuesRef x =
      ValuesOf(port::Input(context, node, kInput), data.input);
  const reference::AdapterWeights weights = AdapterWeightsIn(
      layer, state::Params(port::Input(context, node, kState).As<uint8_t>()));
  const port::TensorView output = port::Output(context, node, kOutput);
  float* y_row = static_cast<float*>(port::Scratch(context, data.row_scratch));
  float* hidden = data.keeps_hidden
                      ? port::Output(context, node, kHidden).As<float>()
                      : y_row + layer.features;
  for (int b = 0; b < data.batches; ++b) {
    float* a = data.keeps_hidden ? hidden + b * layer.bottleneck : hidden;
    const reference::ValuesRef x_row = x.Offset(b * layer.features);
    reference::AdapterHiddenRow(x_row, weights, layer.activation,
                                layer.features, layer.bottleneck, a);
    reference::AdapterOutputRow(x_row, a, weights, layer.features,
                                layer.bottleneck, y_row);
    StoreValues(y_row, layer.features, data.output, output, b * layer.features);
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kAdapterKernel = {kAdapterOpName, Init, nullptr,
                                  Prepare, Eval, nullptr};

}  // namespace tflmt
