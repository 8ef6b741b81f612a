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
//          5 mode, 6 LoRA hidden (or -1: FC / conv LoRA recomputes it from x),
//          7 channel -> row map (only when the weights train as delta rows of
//          some output channels, reference/channel_rows.h)
// Outputs: 0 dx (optional)
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/linear_layer.h"
#include "kernels/training_state.h"
#include "reference/channel_rows.h"
#include "reference/linear.h"
#include "reference/lora.h"

namespace tflmt {
namespace {

constexpr int kOutputGrad = 0;
constexpr int kInput = 1;
constexpr int kOutput = 2;
constexpr int kWeights = 3;
constexpr int kState = 4;
constexpr int kMode = 5;
constexpr int kLoraHidden = 6;
constexpr int kChannelMap = 7;
constexpr int kInputGrad = 0;

struct OpData {
  LinearLayer layer;
  reference::WeightsRef frozen_weights;
  reference::ChannelRows channel_rows;  // rows 0: the whole filter trains or is frozen
  ActivationQuant input;
  ActivationQuant output;
  bool computes_input_grad = false;
  int row_scratch = -1;  // one output position of dz (out_c floats)
  // FC / conv: dh [pixels, rank], then conv_A(x) at one position [rank] when
  // it is recomputed; depthwise: delta, d delta.
  int lora_scratch = -1;
};

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, "tflm-train linear layer grad"));
  LinearLayer& layer = data->layer;
  const char* op = layer.name();
  const int inputs_expected = layer.channel_rows ? 8 : 7;
  TFLMT_ENSURE_OK(CheckArity(node, op, inputs_expected, inputs_expected, 0, 1));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));

  port::TensorInfo output_grad, input_grad;
  TFLMT_ENSURE_OK(RequireFloatInput(context, node, kOutputGrad, op, "dy", -1,
                                    &output_grad));
  const bool needs_input = layer.trainable_weights() || layer.has_lora();
  TFLMT_ENSURE_MSG(port::HasInput(node, kInput) || !needs_input,
                   "%s: trainable weights and LoRA need x", op);
  const bool has_input_grad = port::NumOutputs(node) == 1;
  if (has_input_grad) {
    TFLMT_ENSURE_OK(RequireFloatOutput(context, node, kInputGrad, op, "dx", -1,
                                       &input_grad));
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
    TFLMT_ENSURE_OK(RequireInput(context, node, kInput, op, "x", &input));
    TFLMT_ENSURE_OK(PrepareGeometry(input, output_values, &layer));
    TFLMT_ENSURE_OK(ActivationQuantOf(input, op, "x", &data->input));
  } else if (has_input_grad) {
    TFLMT_ENSURE_OK(PrepareGeometry(input_grad, output_values, &layer));
  } else {
    TFLMT_ENSURE_OK(PrepareOutputGeometry(output_values, &layer));
  }
  TFLMT_ENSURE_MSG(!has_input_grad || input_grad.FlatSize() ==
                                          layer.geometry.in_pixels() * layer.geometry.in_c,
                   "%s: dx must hold x's %d values", op,
                   layer.geometry.in_pixels() * layer.geometry.in_c);
  if (layer.dy_pooled) {
    TFLMT_ENSURE_MSG(dy_values == layer.geometry.batches * layer.geometry.out_c,
                     "%s: pooled dy must hold one value per channel", op);
  }
  const int outputs = layer.geometry.out_pixels() * layer.geometry.out_c;

  if (layer.activation != reference::Activation::kNone) {
    port::TensorInfo output;
    if (layer.activation_mask) {
      TFLMT_ENSURE_OK(RequireInput(context, node, kOutput, op, "activation mask", &output));
      TFLMT_ENSURE_OK(CheckTensor(output, op, "activation mask",
                                  port::DataType::kUInt8, layer.mask_bytes()));
    } else {
      TFLMT_ENSURE_OK(RequireInput(context, node, kOutput, op, "y", &output));
      TFLMT_ENSURE_MSG(output.FlatSize() == outputs, "%s: y must hold %d values",
                       op, outputs);
      TFLMT_ENSURE_OK(ActivationQuantOf(output, op, "y", &data->output));
    }
  }
  if (layer.activation != reference::Activation::kNone || layer.dy_pooled) {
    TFLMT_ENSURE_OK(port::RequestScratch(
        context, sizeof(float) * layer.geometry.out_c, &data->row_scratch));
  }
  if (layer.reads_frozen_weights()) {
    port::TensorInfo weights;
    TFLMT_ENSURE_OK(RequireInput(context, node, kWeights, op, "frozen weights", &weights));
    TFLMT_ENSURE_OK(PrepareFrozenWeights(weights, layer, &data->frozen_weights));
  }
  if (layer.channel_rows) {
    port::TensorInfo map;
    TFLMT_ENSURE_OK(RequireInput(context, node, kChannelMap, op, "channel map", &map));
    TFLMT_ENSURE_OK(PrepareChannelRows(map, &layer, &data->channel_rows.row_of_channel));
    data->channel_rows.rows = layer.trained_rows;
  }
  if (layer.has_trainable_part()) {
    port::TensorInfo state;
    TFLMT_ENSURE_OK(RequireInput(context, node, kState, op, "state", &state));
    TFLMT_ENSURE_OK(PrepareState(state, layer));
  }
  if (layer.has_lora()) {
    if (layer.depthwise()) {
      TFLMT_ENSURE_OK(port::RequestScratch(
          context, 2 * sizeof(float) * layer.weight_count(), &data->lora_scratch));
    } else {
      const bool recomputes = !port::HasInput(node, kLoraHidden);
      if (!recomputes) {
        TFLMT_ENSURE_OK(RequireFloatInput(context, node, kLoraHidden, op,
                                          "LoRA hidden", layer.lora_hidden_count()));
      }
      const int floats = layer.lora_hidden_count() + (recomputes ? layer.lora_rank : 0);
      TFLMT_ENSURE_OK(port::RequestScratch(context, sizeof(float) * floats,
                                           &data->lora_scratch));
    }
  }
  return port::Status::kOk;
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
    reference::LinearInputGrad(layer.kind, g,
                               CurrentWeights(layer, data.frozen_weights, params),
                               dz, /*accumulate=*/false, dx);
    if (layer.channel_rows) {
      reference::ChannelRowsInputGrad(layer.kind, g, data.channel_rows,
                                      params + layer.weight_offset, dz, dx);
    }
  }
  if (layer.channel_rows) {
    reference::ChannelRowsWeightGrad(layer.kind, g, data.channel_rows, dz, x,
                                     grads + layer.weight_offset);
  } else if (layer.trainable_weights()) {
    reference::LinearWeightGrad(layer.kind, g, dz, x, grads + layer.weight_offset);
  }
  if (layer.trainable_bias()) {
    reference::BiasGradAccumulate(dz, g.out_pixels(), g.out_c,
                                  grads + layer.bias_offset);
  }
  if (layer.has_lora()) {
    float* scratch = static_cast<float*>(port::Scratch(context, data.lora_scratch));
    const reference::LoraParams lora = layer.Lora(params);
    const reference::LoraGrads lora_grads = layer.LoraGradsIn(grads);
    if (layer.depthwise()) {
      reference::DepthwiseLoraBackward(g, lora, dz, x, scratch, lora_grads, dx);
    } else {
      reference::LoraHiddenRows hidden;
      hidden.a_geometry = reference::LoraAGeometry(g, layer.lora_rank);
      if (port::HasInput(node, kLoraHidden)) {
        hidden.kept = port::Input(context, node, kLoraHidden).As<float>();
      } else {
        hidden.a = lora.a;
        hidden.x = x;
        hidden.row = scratch + layer.lora_hidden_count();
      }
      reference::LoraBackward(layer.kind, g, lora, dz, x, hidden, scratch,
                              lora_grads, dx);
    }
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kFullyConnectedGradKernel = {
    kFullyConnectedGradOpName,
    InitLinearOp<OpData, LinearKind::kFullyConnected, true>, nullptr, Prepare,
    Eval, nullptr};
const port::KernelDef kConv2DGradKernel = {
    kConv2DGradOpName, InitLinearOp<OpData, LinearKind::kConv2D, true>, nullptr,
    Prepare, Eval, nullptr};
const port::KernelDef kDepthwiseConv2DGradKernel = {
    kDepthwiseConv2DGradOpName,
    InitLinearOp<OpData, LinearKind::kDepthwiseConv2D, true>, nullptr, Prepare,
    Eval, nullptr};

}  // namespace tflmt
