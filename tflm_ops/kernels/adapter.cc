// TFLMT_ADAPTER: a bottleneck adapter on a frozen layer's output,
//   a = act(D x + bd),  y = x + U a + bu,
// computed in float32. A quantized x gives a y quantized with the same
// parameters, so a fresh adapter (U = 0, bu = 0) passes x through unchanged.
//
// Inputs:  0 x (float32 / int8 / int16), 1 state
// Outputs: 0 y (x's type), 1 a (float32 [batches, bottleneck], kept for the
//          backward op; absent when the converter has it recompute a)
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
  return InitOpData<OpData>(context, options, length, kAdapterOpName,
                            kAdapterOptionsVersion,
                            [](OptionsReader& reader, OpData* data) {
                              return ParseAdapterLayer(reader, &data->layer);
                            });
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kAdapterOpName;
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 2, 2, 1, 2));
  data->keeps_hidden = port::NumOutputs(node) == 2;
  port::TensorInfo input, state, output;
  TFLMT_ENSURE_OK(RequireInput(context, node, kInput, op, "x", &input));
  TFLMT_ENSURE_OK(RequireInput(context, node, kState, op, "state", &state));
  TFLMT_ENSURE_OK(RequireOutput(context, node, kOutput, op, "y", &output));
  TFLMT_ENSURE_OK(PrepareAdapterState(state, data->layer, op));
  TFLMT_ENSURE_OK(ActivationQuantOf(input, op, "x", &data->input));
  TFLMT_ENSURE_OK(ActivationQuantOf(output, op, "y", &data->output));
  const AdapterLayer& layer = data->layer;
  TFLMT_ENSURE_MSG(input.FlatSize() % layer.features == 0 &&
                       output.FlatSize() == input.FlatSize(),
                   "%s: input and output must hold rows of %d", op,
                   layer.features);
  data->batches = input.FlatSize() / layer.features;
  if (data->keeps_hidden) {
    TFLMT_ENSURE_OK(RequireFloatOutput(context, node, kHidden, op, "a",
                                       data->batches * layer.bottleneck));
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
