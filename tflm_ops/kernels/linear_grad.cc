// TFLMT_FULLY_CONNECTED_GRAD, TFLMT_CONV_2D_GRAD,
// TFLMT_DEPTHWISE_CONV_2D_GRAD: backward pass of a linear layer.
//
// Serves two kinds of forward op:
//  - a stock, frozen FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D between the
//    adapters and the loss: only the input gradient is computed (the filter
//    float32 or int8, dequantized with its own scales); no weight gradient of
//    a frozen layer is ever materialized;
//  - our trainable version: gradients of its trainable parts (weights, bias,
//    LoRA A and B) are added to the state's gradient area, and dx is computed
//    only when an earlier layer trains (the converter leaves the output out
//    otherwise).
// dz = dy * activation'(y) undoes the fused activation first. Runs only when
// the mode input says "train".
//
// Inputs:  0 dy, 1 x (or -1 unless weights or LoRA train), 2 y (or the
//          forward op's activation mask, or -1 without activation), 3 frozen weights (or -1), 4 state (or -1),
//          5 mode, 6 LoRA hidden (or -1: FC / conv LoRA recomputes it from x)
// Outputs: 0 dx (optional)
#include <cstring>
#include <new>

#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/linear_layer.h"
#include "kernels/training_state.h"
#include "reference/conv.h"
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
  LinearLayer layer;
  reference::WeightsRef frozen_weights;
  ActivationQuant input;
  ActivationQuant output;
  bool computes_input_grad = false;
  int row_scratch = -1;  // one output position of dz (out_c floats)
  // FC / conv: dh [pixels, rank], then conv_A(x) at one position [rank] when
  // it is recomputed; depthwise: delta, d delta.
  int lora_scratch = -1;
};

template <LinearKind kKind>
void* Init(port::Context* context, const char* options, size_t length) {
  void* memory = port::AllocatePersistent(context, sizeof(OpData));
  if (memory == nullptr) return nullptr;
  OpData* data = new (memory) OpData();
  return ParseLinearLayer(options, length, kKind, &data->layer) ? data : nullptr;
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "tflm-train linear layer grad: bad options");
  LinearLayer& layer = data->layer;
  TFLMT_ENSURE(port::NumInputs(node) == 7 && port::NumOutputs(node) <= 1);

  port::TensorInfo output_grad, mode, input_grad;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kOutputGrad, &output_grad));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kMode, &mode));
  TFLMT_ENSURE_MSG(mode.type == port::DataType::kInt32,
                   "%s_GRAD: mode must be int32", layer.name());
  TFLMT_ENSURE_MSG(output_grad.type == port::DataType::kFloat32,
                   "%s_GRAD: dy must be float32", layer.name());
  const bool needs_input = layer.trainable_weights() || layer.has_lora();
  TFLMT_ENSURE_MSG(port::HasInput(node, kInput) || !needs_input,
                   "%s_GRAD: trainable weights and LoRA need x", layer.name());
  const bool has_input_grad = port::NumOutputs(node) == 1;
  if (has_input_grad) {
    TFLMT_ENSURE_OK(port::OutputInfo(context, node, kInputGrad, &input_grad));
    TFLMT_ENSURE_MSG(input_grad.type == port::DataType::kFloat32,
                     "%s_GRAD: dx must be float32", layer.name());
    data->computes_input_grad = true;
  }
  // dy holds y's values, possibly flattened by a RESHAPE's (aliased) gradient,
  // or only their averages per channel when the layer feeds a global pool.
  const int dy_values = output_grad.FlatSize();
  const int output_values =
      layer.dy_pooled ? layer.geometry.out_h * layer.geometry.out_w * dy_values
                      : dy_values;
  // The input side's shape comes from x, or from dx, which is shaped like it;
  // with neither (a bias-only deepest layer), no input-side loop runs.
  if (port::HasInput(node, kInput)) {
    port::TensorInfo input;
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kInput, &input));
    TFLMT_ENSURE_OK(PrepareGeometry(input, output_values, &layer));
    TFLMT_ENSURE_OK(ActivationQuantOf(input, &data->input));
  } else if (has_input_grad) {
    TFLMT_ENSURE_OK(PrepareGeometry(input_grad, output_values, &layer));
  } else {
    TFLMT_ENSURE_OK(PrepareOutputGeometry(output_values, &layer));
  }
  TFLMT_ENSURE_MSG(!has_input_grad || input_grad.FlatSize() ==
                                          layer.geometry.in_pixels() * layer.geometry.in_c,
                   "%s_GRAD: dx must hold x's %d values", layer.name(),
                   layer.geometry.in_pixels() * layer.geometry.in_c);
  if (layer.dy_pooled) {
    TFLMT_ENSURE_MSG(dy_values == layer.geometry.batches * layer.geometry.out_c,
                     "%s_GRAD: pooled dy must hold one value per channel",
                     layer.name());
  }
  const int outputs = layer.geometry.out_pixels() * layer.geometry.out_c;

  if (layer.activation != reference::Activation::kNone) {
    port::TensorInfo output;
    TFLMT_ENSURE(port::HasInput(node, kOutput));
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kOutput, &output));
    if (layer.activation_mask) {
      TFLMT_ENSURE_MSG(output.type == port::DataType::kUInt8 &&
                           output.FlatSize() == layer.mask_bytes(),
                       "%s_GRAD: activation mask must be uint8 [%d]",
                       layer.name(), layer.mask_bytes());
    } else {
      TFLMT_ENSURE(output.FlatSize() == outputs);
      TFLMT_ENSURE_OK(ActivationQuantOf(output, &data->output));
    }
  }
  if (layer.activation != reference::Activation::kNone || layer.dy_pooled) {
    TFLMT_ENSURE_OK(port::RequestScratch(
        context, sizeof(float) * layer.geometry.out_c, &data->row_scratch));
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
    TFLMT_ENSURE_OK(PrepareState(state, layer));
  }
  if (layer.has_lora()) {
    if (layer.depthwise()) {
      TFLMT_ENSURE_OK(port::RequestScratch(
          context, 2 * sizeof(float) * layer.weight_count(), &data->lora_scratch));
    } else {
      const bool recomputes = !port::HasInput(node, kLoraHidden);
      if (!recomputes) {
        port::TensorInfo hidden;
        TFLMT_ENSURE_OK(port::InputInfo(context, node, kLoraHidden, &hidden));
        TFLMT_ENSURE(hidden.type == port::DataType::kFloat32 &&
                     hidden.FlatSize() == layer.lora_hidden_count());
      }
      const int floats = layer.lora_hidden_count() + (recomputes ? layer.lora_rank : 0);
      TFLMT_ENSURE_OK(port::RequestScratch(context, sizeof(float) * floats,
                                           &data->lora_scratch));
    }
  }
  return port::Status::kOk;
}

// LoRA backward for FC / CONV_2D: through B (1x1), then A (the layer's shape).
void LoraBackward(const LinearLayer& layer, const float* params, float* grads,
                  const reference::GradRows& dz, const reference::ValuesRef& x,
                  const LoraHiddenRows& hidden, float* dh, float* dx) {
  const int pixels = layer.geometry.out_pixels();
  const int rank = layer.lora_rank;
  for (int p = 0; p < pixels; ++p) {
    reference::LowRankBackwardRow(dz.Row(p), hidden.Row(p),
                                  params + layer.lora_b_offset, layer.lora_scale,
                                  layer.geometry.out_c, rank,
                                  grads + layer.lora_b_offset, dh + p * rank);
  }
  const LinearLayer a_layer = LoraALayer(layer);
  const reference::GradRows dh_rows = reference::GradRows::Plain(dh, layer.lora_rank);
  LinearWeightGrad(a_layer, dh_rows, x, grads + layer.lora_a_offset);
  if (dx != nullptr) {
    reference::WeightsRef a;
    a.f32 = params + layer.lora_a_offset;
    LinearInputGrad(a_layer, a, dh_rows, /*accumulate=*/true, dx);
  }
}

// LoRA backward for DEPTHWISE_CONV_2D: the filter delta's gradient, then
// through delta = scale B A to A and B.
void DepthwiseLoraBackward(const LinearLayer& layer, const float* params,
                           float* grads, const reference::GradRows& dz,
                           const reference::ValuesRef& x, float* scratch,
                           float* dx) {
  const int taps = layer.taps(), out_c = layer.geometry.out_c;
  const int rank = layer.lora_rank;
  float* delta = scratch;
  float* delta_grad = scratch + layer.weight_count();
  std::memset(delta_grad, 0, sizeof(float) * layer.weight_count());
  reference::DepthwiseWeightGradAccumulate(dz, x, layer.geometry, delta_grad);
  const float* a = params + layer.lora_a_offset;
  const float* b = params + layer.lora_b_offset;
  float* da = grads + layer.lora_a_offset;
  float* db = grads + layer.lora_b_offset;
  for (int t = 0; t < taps; ++t) {
    for (int oc = 0; oc < out_c; ++oc) {
      const float g = layer.lora_scale * delta_grad[t * out_c + oc];
      if (g == 0.0f) continue;
      for (int k = 0; k < rank; ++k) {
        db[oc * rank + k] += g * a[k * taps + t];
        da[k * taps + t] += g * b[oc * rank + k];
      }
    }
  }
  if (dx != nullptr) {
    DepthwiseLoraDelta(layer, params, delta);
    reference::WeightsRef delta_ref;
    delta_ref.f32 = delta;
    reference::DepthwiseInputGrad(dz, delta_ref, layer.geometry,
                                  /*accumulate=*/true, dx);
  }
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const LinearLayer& layer = data.layer;
  const reference::ConvGeometry& g = layer.geometry;

  // dz, the gradient before the fused activation, row by row on demand.
  reference::GradRows dz;
  dz.dy = port::Input(context, node, kOutputGrad).As<float>();
  dz.channels = g.out_c;
  dz.activation = layer.activation;
  if (layer.activation_mask) {
    dz.mask = port::Input(context, node, kOutput).As<uint8_t>();
  } else if (layer.activation != reference::Activation::kNone) {
    dz.y = ValuesOf(port::Input(context, node, kOutput), data.output);
  }
  if (layer.dy_pooled) dz.positions_per_batch = g.out_h * g.out_w;
  if (data.row_scratch >= 0) {
    dz.row = static_cast<float*>(port::Scratch(context, data.row_scratch));
  }

  float* params = nullptr;
  float* grads = nullptr;
  if (layer.has_trainable_part()) {
    uint8_t* state = port::Input(context, node, kState).As<uint8_t>();
    params = state::Params(state);
    grads = state::Grads(state);
  }
  const reference::ValuesRef x =
      port::HasInput(node, kInput)
          ? ValuesOf(port::Input(context, node, kInput), data.input)
          : reference::ValuesRef();

  float* dx = data.computes_input_grad
                  ? port::Output(context, node, kInputGrad).As<float>()
                  : nullptr;
  if (dx != nullptr) {
    LinearInputGrad(layer, CurrentWeights(layer, data.frozen_weights, params),
                    dz, /*accumulate=*/false, dx);
  }
  if (layer.trainable_weights()) {
    LinearWeightGrad(layer, dz, x, grads + layer.weight_offset);
  }
  if (layer.trainable_bias()) {
    reference::BiasGradAccumulate(dz, g.out_pixels(), g.out_c,
                                  grads + layer.bias_offset);
  }
  if (layer.has_lora()) {
    float* scratch = static_cast<float*>(port::Scratch(context, data.lora_scratch));
    if (layer.depthwise()) {
      DepthwiseLoraBackward(layer, params, grads, dz, x, scratch, dx);
    } else {
      LoraHiddenRows hidden;
      hidden.layer = &layer;
      if (port::HasInput(node, kLoraHidden)) {
        hidden.kept = port::Input(context, node, kLoraHidden).As<float>();
      } else {
        hidden.a = params + layer.lora_a_offset;
        hidden.x = x;
        hidden.row = scratch + layer.lora_hidden_count();
      }
      LoraBackward(layer, params, grads, dz, x, hidden, scratch, dx);
    }
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kFullyConnectedGradKernel = {
    kFullyConnectedGradOpName, Init<LinearKind::kFullyConnected>, nullptr,
    Prepare, Eval, nullptr};
const port::KernelDef kConv2DGradKernel = {
    kConv2DGradOpName, Init<LinearKind::kConv2D>, nullptr, Prepare, Eval,
    nullptr};
const port::KernelDef kDepthwiseConv2DGradKernel = {
    kDepthwiseConv2DGradOpName, Init<LinearKind::kDepthwiseConv2D>, nullptr,
    Prepare, Eval, nullptr};

}  // namespace tflmt
