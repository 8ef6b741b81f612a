// TFLMT_FULLY_CONNECTED_GRAD: backward pass of a fully-connected layer.
//
// Serves two kinds of forward op:
//  - a stock, frozen FULLY_CONNECTED between the adapters and the loss: only
//    the input gradient dx = W^T dz is computed (W float32 or int8, dequantized
//    with its own scales); no weight gradient is ever materialized;
//  - a TFLMT_FULLY_CONNECTED: gradients of its trainable parts (weights, bias,
//    LoRA A and B) are added to the state's gradient area, and dx is computed
//    only when an earlier layer trains (the converter leaves the output out
//    otherwise).
// dz = dy * activation'(y) undoes the fused activation first.
// Runs only when the mode input says "train".
//
// Inputs:  0 dy, 1 x, 2 y (or -1 without activation), 3 frozen weights
//          (or -1), 4 state (or -1), 5 mode, 6 LoRA hidden h (or -1)
// Outputs: 0 dx (optional)
#include <new>

#include "kernels/fully_connected_common.h"
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/training_state.h"
#include "reference/fully_connected.h"

namespace tflmt {
namespace {

constexpr int kOutputGrad = 0;
constexpr int kInput = 1;
constexpr int kOutput = 2;
constexpr int kWeights = 3;
constexpr int kState = 4;
constexpr int kMode = 5;
constexpr int kLoraHidden = 6;
constexpr int kInputGrad = 0;

struct OpData {
  FullyConnectedLayer layer;
  int batches = 0;
  bool computes_input_grad = false;
  reference::WeightsRef frozen_weights;
  ActivationQuant input;
  ActivationQuant output;
  int dz_scratch = -1;           // dy * activation'(y), [batches, units]
  int output_float_scratch = -1; // dequantized y, [batches, units]
  int input_float_scratch = -1;  // dequantized x, [batches, in_features]
  int dh_scratch = -1;           // LoRA hidden gradient, [batches, rank]
};

void* Init(port::Context* context, const char* options, size_t length) {
  void* memory = port::AllocatePersistent(context, sizeof(OpData));
  if (memory == nullptr) return nullptr;
  OpData* data = new (memory) OpData();
  if (!ParseFullyConnectedLayer(options, length, &data->layer)) return nullptr;
  return data;
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_FULLY_CONNECTED_GRAD: bad options");
  const FullyConnectedLayer& layer = data->layer;
  TFLMT_ENSURE(port::NumInputs(node) == 7);
  TFLMT_ENSURE(port::NumOutputs(node) <= 1);

  port::TensorInfo output_grad, input, mode;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kOutputGrad, &output_grad));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kInput, &input));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kMode, &mode));
  TFLMT_ENSURE_MSG(mode.type == port::DataType::kInt32,
                   "TFLMT_FULLY_CONNECTED_GRAD: mode must be int32");
  data->batches = BatchCount(input, layer.in_features);
  TFLMT_ENSURE_MSG(data->batches > 0 &&
                       output_grad.type == port::DataType::kFloat32 &&
                       output_grad.FlatSize() == data->batches * layer.units,
                   "TFLMT_FULLY_CONNECTED_GRAD: dy must be float32 with "
                   "%d values per row",
                   layer.units);
  TFLMT_ENSURE_OK(ActivationQuantOf(input, &data->input));

  if (layer.activation != reference::Activation::kNone) {
    port::TensorInfo output;
    TFLMT_ENSURE(port::HasInput(node, kOutput));
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kOutput, &output));
    TFLMT_ENSURE(output.FlatSize() == output_grad.FlatSize());
    TFLMT_ENSURE_OK(ActivationQuantOf(output, &data->output));
    TFLMT_ENSURE_OK(RequestFloatCopy(context, data->output,
                                     output.FlatSize(),
                                     &data->output_float_scratch));
    TFLMT_ENSURE_OK(port::RequestScratch(
        context, sizeof(float) * output_grad.FlatSize(), &data->dz_scratch));
  }
  if (!layer.trainable_weights()) {
    port::TensorInfo weights;
    TFLMT_ENSURE(port::HasInput(node, kWeights));
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kWeights, &weights));
    TFLMT_ENSURE_OK(PrepareFrozenWeights(weights, layer, &data->frozen_weights));
  }
  if (layer.has_trainable_part()) {
    port::TensorInfo state;
    TFLMT_ENSURE(port::HasInput(node, kState));
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kState, &state));
    TFLMT_ENSURE_OK(PrepareStateTensor(state, layer));
  }
  if (layer.has_lora()) {
    port::TensorInfo hidden;
    TFLMT_ENSURE(port::HasInput(node, kLoraHidden));
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kLoraHidden, &hidden));
    TFLMT_ENSURE(hidden.FlatSize() == data->batches * layer.lora_rank);
    TFLMT_ENSURE_OK(port::RequestScratch(
        context, sizeof(float) * data->batches * layer.lora_rank,
        &data->dh_scratch));
  }
  if (layer.trainable_weights() || layer.has_lora()) {
    TFLMT_ENSURE_OK(RequestFloatCopy(context, data->input, input.FlatSize(),
                                     &data->input_float_scratch));
  }

  if (port::NumOutputs(node) == 1) {
    port::TensorInfo input_grad;
    TFLMT_ENSURE_OK(port::OutputInfo(context, node, kInputGrad, &input_grad));
    TFLMT_ENSURE_MSG(input_grad.type == port::DataType::kFloat32 &&
                         input_grad.FlatSize() == input.FlatSize(),
                     "TFLMT_FULLY_CONNECTED_GRAD: dx must be float32 shaped "
                     "like x");
    data->computes_input_grad = true;
  }
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const FullyConnectedLayer& layer = data.layer;
  const int batches = data.batches;

  // dz: the gradient before the fused activation.
  const float* dy = port::Input(context, node, kOutputGrad).As<float>();
  const float* dz = dy;
  if (data.dz_scratch >= 0) {
    float* buffer = static_cast<float*>(port::Scratch(context, data.dz_scratch));
    const int n = batches * layer.units;
    const float* y = FloatValues(context, port::Input(context, node, kOutput),
                                 data.output, n, data.output_float_scratch);
    reference::ActivationGradFloat(layer.activation, dy, y, n, buffer);
    dz = buffer;
  }

  float* params = nullptr;
  float* grads = nullptr;
  if (layer.has_trainable_part()) {
    uint8_t* state = port::Input(context, node, kState).As<uint8_t>();
    params = state::Params(state);
    grads = state::Grads(state);
  }

  // x as float, for weight and LoRA gradients.
  const float* x = nullptr;
  if (layer.trainable_weights() || layer.has_lora()) {
    x = FloatValues(context, port::Input(context, node, kInput), data.input,
                    batches * layer.in_features, data.input_float_scratch);
  }

  float* dx = data.computes_input_grad
                  ? port::Output(context, node, kInputGrad).As<float>()
                  : nullptr;
  if (dx != nullptr) {
    reference::InputGrad(dz, CurrentWeights(layer, data.frozen_weights, params),
                         batches, layer.in_features, layer.units,
                         /*accumulate=*/false, dx);
  }
  if (layer.trainable_weights()) {
    reference::WeightGradAccumulate(dz, x, batches, layer.in_features,
                                    layer.units, grads + layer.weight_offset);
  }
  if (layer.trainable_bias()) {
    reference::BiasGradAccumulate(dz, batches, layer.units,
                                  grads + layer.bias_offset);
  }
  if (layer.has_lora()) {
    float* dh = static_cast<float*>(port::Scratch(context, data.dh_scratch));
    reference::LoraBackward(
        dz, x, port::Input(context, node, kLoraHidden).As<float>(),
        params + layer.lora_a_offset, params + layer.lora_b_offset,
        layer.lora_scale, batches, layer.in_features, layer.units,
        layer.lora_rank, grads + layer.lora_a_offset,
        grads + layer.lora_b_offset, dh, dx);
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kFullyConnectedGradKernel = {
    kFullyConnectedGradOpName, Init, nullptr, Prepare, Eval, nullptr};

}  // namespace tflmt
