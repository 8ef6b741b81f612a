// TFLMT_ADAPTER_GRAD: backward pass of TFLMT_ADAPTER. Adds the gradients of
// D, bd, U, bu to the state and, when an earlier layer trains, writes
// dx = dy + D^T (U^T dy * act'(a)). Runs only when the mode is "train".
//
// Inputs:  0 dy (float32), 1 x, 2 a (the adapter's hidden output, or -1:
//          recomputed here from x a row at a time), 3 state, 4 mode
// Outputs: 0 dx (optional, float32)
#include "kernels/adapter_common.h"
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/training_state.h"

namespace tflmt {
namespace {

constexpr int kOutputGrad = 0;
constexpr int kInput = 1;
constexpr int kHidden = 2;
constexpr int kState = 3;
constexpr int kMode = 4;
constexpr int kInputGrad = 0;

struct OpData {
  AdapterLayer layer;
  ActivationQuant input;
  int batches = 0;
  bool computes_input_grad = false;
  // The gradient before the activation, one row [bottleneck]; then a of that
  // row [bottleneck] when it is recomputed.
  int row_scratch = -1;
};

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(context, options, length, kAdapterGradOpName,
                            kAdapterGradOptionsVersion,
                            [](OptionsReader& reader, OpData* data) {
                              return ParseAdapterLayer(reader, &data->layer);
                            });
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kAdapterGradOpName;
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 5, 5, 0, 1));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  port::TensorInfo input, state;
  TFLMT_ENSURE_OK(RequireInput(context, node, kInput, op, "x", &input));
  TFLMT_ENSURE_OK(RequireInput(context, node, kState, op, "state", &state));
  TFLMT_ENSURE_OK(PrepareAdapterState(state, data->layer, op));
  TFLMT_ENSURE_OK(ActivationQuantOf(input, op, "x", &data->input));
  const AdapterLayer& layer = data->layer;
  TFLMT_ENSURE_MSG(input.FlatSize() % layer.features == 0,
                   "%s: x must hold rows of %d", op, layer.features);
  data->batches = input.FlatSize() / layer.features;
  TFLMT_ENSURE_OK(RequireFloatInput(context, node, kOutputGrad, op, "dy",
                                    input.FlatSize()));
  const bool keeps_hidden = port::HasInput(node, kHidden);
  if (keeps_hidden) {
    TFLMT_ENSURE_OK(RequireFloatInput(context, node, kHidden, op, "a",
                                      data->batches * layer.bottleneck));
  }
  if (port::NumOutputs(node) == 1) {
    TFLMT_ENSURE_OK(RequireFloatOutput(context, node, kInputGrad, op, "dx",
                                       input.FlatSize()));
    data->computes_input_grad = true;
  }
  return port::RequestScratch(
      context, sizeof(float) * layer.bottleneck * (keeps_hidden ? 1 : 2),
      &data->row_scratch);
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const AdapterLayer& layer = data.layer;
  const int features = layer.features, bottleneck = layer.bottleneck;
  const reference::ValuesRef x =
      ValuesOf(port::Input(context, node, kInput), data.input);
  uint8_t* state = port::Input(context, node, kState).As<uint8_t>();
  const reference::AdapterWeights weights =
      AdapterWeightsIn(layer, state::Params(state));
  const reference::AdapterGrads grads =
      AdapterGradsIn(layer, state::Grads(state));
  const float* dy = port::Input(context, node, kOutputGrad).As<float>();
  float* dx = data.computes_input_grad
                  ? port::Output(context, node, kInputGrad).As<float>()
                  : nullptr;
  const float* kept = port::HasInput(node, kHidden)
                          ? port::Input(context, node, kHidden).As<float>()
                          : nullptr;
  float* dpre = static_cast<float*>(port::Scratch(context, data.row_scratch));
  float* recomputed = dpre + bottleneck;
  for (int b = 0; b < data.batches; ++b) {
    const reference::ValuesRef x_row = x.Offset(b * features);
    const float* a = kept != nullptr ? kept + b * bottleneck : recomputed;
    if (kept == nullptr) {
      reference::AdapterHiddenRow(x_row, weights, layer.activation, features,
                                  bottleneck, recomputed);
    }
    reference::AdapterBackwardRow(dy + b * features, x_row, a, weights, grads,
                                  layer.activation, features, bottleneck, dpre,
                                  dx == nullptr ? nullptr : dx + b * features);
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kAdapterGradKernel = {kAdapterGradOpName, Init, nullptr,
                                            Prepare, Eval, nullptr};

}  // namespace tflmt
