// TFLMT_FULLY_CONNECTED, TFLMT_CONV_2D, TFLMT_DEPTHWISE_CONV_2D: a linear
// layer some of whose parts train (see linear_layer.h).
//
// They replace the frozen layer a method targets (lora, bias, sparse) or add
// a new one (head). With an int8 input and output and frozen int8 weights
// the layer stays integer: trainable terms (bias, LoRA) are added to the
// int32 accumulator, so with B = 0 the bytes equal the stock kernel's.
// Otherwise it computes in float32 and stores float32 or quantized values.
//
// Inputs:  0 x, 1 frozen weights (or -1), 2 frozen bias (or -1), 3 state,
//          4 channel -> row map (only when the weights train as delta rows
//          of some output channels, reference/channel_rows.h)
// Outputs: 0 y, 1 LoRA hidden conv_A(x) (FC / CONV_2D with LoRA, unless the
//          converter leaves it out for the backward op to recompute),
//          last: the activation mask (bit set where activation' is 1), when
//          the options ask for it
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/linear_layer.h"
#include "kernels/training_state.h"
#include "reference/channel_rows.h"
#include "reference/linear.h"
#include "reference/linear_int8.h"
#include "reference/lora.h"
#include "reference/quantization.h"

namespace tflmt {
namespace {

constexpr int kInput = 0;
constexpr int kWeights = 1;
constexpr int kBias = 2;
constexpr int kState = 3;
constexpr int kChannelMap = 4;
constexpr int kOutput = 0;
constexpr int kLoraHidden = 1;

struct OpData {
  LinearLayer layer;
  ActivationQuant input;
  ActivationQuant output;
  reference::WeightsRef frozen_weights;
  reference::ChannelRows channel_rows;  // rows 0: the whole filter trains or is frozen
  const void* frozen_bias = nullptr;  // int32 (exact int8 path) or float32
  bool exact_int8 = false;
  bool keeps_lora_hidden = false;  // conv_A(x) is an output (else recomputed)
  // Exact int8 path: requantization per output channel and the clamp range.
  reference::Int8Requantization requantization;
  int result_scratch = -1;        // float result before quantizing
  int lora_delta_scratch = -1;    // depthwise LoRA filter delta
  // conv_A(x) at one position, when it is not kept: rank floats, persistent
  // (cheaper than one more scratch buffer and its bookkeeping).
  float* hidden_row = nullptr;
};

port::Status PrepareExactInt8(port::Context* context, const port::TensorInfo& output,
                              OpData* data) {
  const LinearLayer& layer = data->layer;
  reference::Int8Requantization& rq = data->requantization;
  reference::QuantizedActivationRange(layer.activation, output.quant.scale,
                                      output.quant.zero_point, -128, 127,
                                      &rq.act_min, &rq.act_max);
  rq.output_scale = output.quant.scale;
  rq.output_zero_point = output.quant.zero_point;
  const size_t channels = static_cast<size_t>(layer.geometry.out_c);
  int32_t* multipliers = static_cast<int32_t*>(
      port::AllocatePersistent(context, channels * sizeof(int32_t)));
  int* shifts =
      static_cast<int*>(port::AllocatePersistent(context, channels * sizeof(int)));
  float* accumulator_scales = static_cast<float*>(
      port::AllocatePersistent(context, channels * sizeof(float)));
  TFLMT_ENSURE_MSG(multipliers != nullptr && shifts != nullptr &&
                       accumulator_scales != nullptr,
                   "%s: no arena left for per-channel scales", layer.name());
  for (size_t c = 0; c < channels; ++c) {
    const double accumulator_scale =
        static_cast<double>(data->input.scale) *
        static_cast<double>(data->frozen_weights.Scale(static_cast<int>(c)));
    accumulator_scales[c] = static_cast<float>(accumulator_scale);
    reference::QuantizeMultiplier(
        accumulator_scale / static_cast<double>(output.quant.scale),
        &multipliers[c], &shifts[c]);
  }
  rq.multipliers = multipliers;
  rq.shifts = shifts;
  rq.accumulator_scales = accumulator_scales;
  return port::Status::kOk;
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, "tflm-train linear layer"));
  LinearLayer& layer = data->layer;
  const char* op = layer.name();
  const bool lora_hidden = layer.has_lora() && !layer.depthwise();
  const int mask_outputs = layer.activation_mask ? 1 : 0;
  data->keeps_lora_hidden =
      lora_hidden && port::NumOutputs(node) == 2 + mask_outputs;
  const int outputs_expected = 1 + (data->keeps_lora_hidden ? 1 : 0) + mask_outputs;
  const int inputs_expected = layer.channel_rows ? 5 : 4;
  TFLMT_ENSURE_OK(CheckArity(node, op, inputs_expected, inputs_expected,
                             outputs_expected, outputs_expected));

  port::TensorInfo input, output, state;
  TFLMT_ENSURE_OK(RequireInput(context, node, kInput, op, "x", &input));
  TFLMT_ENSURE_OK(RequireOutput(context, node, kOutput, op, "y", &output));
  TFLMT_ENSURE_OK(RequireInput(context, node, kState, op, "state", &state));
  TFLMT_ENSURE_OK(PrepareGeometry(input, output.FlatSize(), &layer));
  if (layer.channel_rows) {
    port::TensorInfo map;
    TFLMT_ENSURE_OK(RequireInput(context, node, kChannelMap, op, "channel map", &map));
    TFLMT_ENSURE_OK(PrepareChannelRows(map, &layer, &data->channel_rows.row_of_channel));
    data->channel_rows.rows = layer.trained_rows;
  }
  TFLMT_ENSURE_OK(PrepareState(state, layer));
  TFLMT_ENSURE_OK(ActivationQuantOf(input, op, "x", &data->input));
  TFLMT_ENSURE_OK(ActivationQuantOf(output, op, "y", &data->output));

  if (layer.reads_frozen_weights()) {
    port::TensorInfo weights;
    TFLMT_ENSURE_OK(RequireInput(context, node, kWeights, op, "frozen weights", &weights));
    TFLMT_ENSURE_OK(PrepareFrozenWeights(weights, layer, &data->frozen_weights));
  }
  // Delta rows are float terms of a few channels: those layers compute in
  // float32, like a layer whose whole filter trains.
  data->exact_int8 = input.type == port::DataType::kInt8 &&
                     output.type == port::DataType::kInt8 &&
                     data->frozen_weights.i8 != nullptr && !layer.channel_rows;
  if (!layer.trainable_bias() && port::HasInput(node, kBias)) {
    port::TensorInfo bias;
    TFLMT_ENSURE_OK(RequireInput(context, node, kBias, op, "frozen bias", &bias));
    const port::DataType bias_type =
        data->exact_int8 ? port::DataType::kInt32 : port::DataType::kFloat32;
    TFLMT_ENSURE_MSG(bias.constant_data != nullptr &&
                         bias.FlatSize() == layer.geometry.out_c &&
                         bias.type == bias_type,
                     "%s: frozen bias must be a constant [%d] of %s", op,
                     layer.geometry.out_c,
                     data->exact_int8 ? "int32" : "float32");
    data->frozen_bias = bias.constant_data;
  }

  const int outputs = layer.geometry.out_pixels() * layer.geometry.out_c;
  if (data->exact_int8) {
    TFLMT_ENSURE_OK(PrepareExactInt8(context, output, data));
  } else if (!data->output.is_float()) {
    TFLMT_ENSURE_OK(port::RequestScratch(context, sizeof(float) * outputs,
                                         &data->result_scratch));
  }
  if (lora_hidden && !data->keeps_lora_hidden) {
    data->hidden_row = static_cast<float*>(
        port::AllocatePersistent(context, sizeof(float) * layer.lora_rank));
    TFLMT_ENSURE_MSG(data->hidden_row != nullptr,
                     "%s: no arena left for a LoRA row", op);
  }
  if (data->keeps_lora_hidden) {
    TFLMT_ENSURE_OK(RequireFloatOutput(context, node, kLoraHidden, op,
                                       "LoRA hidden", layer.lora_hidden_count()));
  }
  if (layer.activation_mask) {
    port::TensorInfo mask;
    TFLMT_ENSURE_OK(RequireOutput(context, node, port::NumOutputs(node) - 1, op,
                                  "activation mask", &mask));
    TFLMT_ENSURE_OK(CheckTensor(mask, op, "activation mask",
                                port::DataType::kUInt8, layer.mask_bytes()));
  }
  if (layer.has_lora() && layer.depthwise()) {
    TFLMT_ENSURE_OK(port::RequestScratch(context,
                                         sizeof(float) * layer.weight_count(),
                                         &data->lora_delta_scratch));
  }
  return port::Status::kOk;
}

// LoRA's inputs for one invocation: h rows (FC / conv) or the filter delta
// (depthwise), from the state's current A and B.
struct LoraInputs {
  reference::LoraParams params;    // rank 0: no LoRA
  reference::ValuesRef x;          // x's real values
  bool low_rank = false;           // FC / conv: B h, rows in `hidden`
  reference::LoraHiddenRows hidden;
  const float* delta = nullptr;    // depthwise: filter delta [taps, out_c]
};

LoraInputs ComputeLora(port::Context* context, port::Node* node,
                       const OpData& data, const port::TensorView& input,
                       const float* params) {
  LoraInputs lora;
  const LinearLayer& layer = data.layer;
  if (!layer.has_lora()) return lora;
  lora.params = layer.Lora(params);
  lora.x = ValuesOf(input, data.input);
  if (layer.depthwise()) {
    float* delta =
        static_cast<float*>(port::Scratch(context, data.lora_delta_scratch));
    reference::DepthwiseLoraDelta(layer.geometry, lora.params, delta);
    lora.delta = delta;
    return lora;
  }
  lora.low_rank = true;
  lora.hidden.a_geometry = reference::LoraAGeometry(layer.geometry, layer.lora_rank);
  if (data.keeps_lora_hidden) {
    float* hidden = port::Output(context, node, kLoraHidden).As<float>();
    reference::LoraHiddenForward(layer.kind, layer.geometry, lora.params,
                                 lora.x, hidden);
    lora.hidden.kept = hidden;
  } else {
    lora.hidden.a = lora.params.a;
    lora.hidden.x = lora.x;
    lora.hidden.row = data.hidden_row;
  }
  return lora;
}

uint8_t* Mask(port::Context* context, port::Node* node, const LinearLayer& layer) {
  if (!layer.activation_mask) return nullptr;
  return port::Output(context, node, port::NumOutputs(node) - 1).As<uint8_t>();
}

port::Status EvalExactInt8(port::Context* context, port::Node* node,
                           const OpData& data, const float* params) {
  const LinearLayer& layer = data.layer;
  const port::TensorView input = port::Input(context, node, kInput);
  const LoraInputs lora = ComputeLora(context, node, data, input, params);
  reference::Int8LayerTerms terms;
  terms.frozen_bias = static_cast<const int32_t*>(data.frozen_bias);
  if (layer.trainable_bias()) terms.trainable_bias = params + layer.bias_offset;
  terms.lora = lora.params;
  if (lora.low_rank) terms.hidden = &lora.hidden;
  terms.delta = lora.delta;
  terms.x = lora.x;
  reference::LinearForwardExactInt8(
      layer.kind, layer.geometry, layer.activation, input.As<int8_t>(),
      data.input.zero_point, data.frozen_weights.i8, terms, data.requantization,
      port::Output(context, node, kOutput).As<int8_t>(), Mask(context, node, layer));
  return port::Status::kOk;
}

port::Status EvalFloat(port::Context* context, port::Node* node,
                       const OpData& data, float* params) {
  const LinearLayer& layer = data.layer;
  const reference::ConvGeometry& g = layer.geometry;
  const port::TensorView input = port::Input(context, node, kInput);
  const port::TensorView output = port::Output(context, node, kOutput);
  const reference::ValuesRef x = ValuesOf(input, data.input);
  float* out = data.output.is_float()
                   ? output.As<float>()
                   : static_cast<float*>(port::Scratch(context, data.result_scratch));
  reference::LinearForward(layer.kind, g,
                           CurrentWeights(layer, data.frozen_weights, params), x,
                           /*accumulate=*/false, out);
  if (layer.channel_rows) {
    reference::ChannelRowsForward(layer.kind, g, data.channel_rows,
                                  params + layer.weight_offset, x, out);
  }
  const float* bias = layer.trainable_bias()
                          ? params + layer.bias_offset
                          : static_cast<const float*>(data.frozen_bias);
  if (bias != nullptr) reference::AddBias(bias, g.out_pixels(), g.out_c, out);
  const LoraInputs lora = ComputeLora(context, node, data, input, params);
  if (lora.low_rank) {
    reference::LoraForwardAccumulate(g, lora.params, lora.hidden, out);
  } else if (lora.delta != nullptr) {
    reference::WeightsRef delta;
    delta.f32 = lora.delta;
    reference::DepthwiseForward(lora.x, delta, g, /*accumulate=*/true, out);
  }
  const int n = g.out_pixels() * g.out_c;
  reference::ApplyActivationInPlace(layer.activation, n, out);
  if (!data.output.is_float()) StoreValues(out, n, data.output, output);
  if (uint8_t* mask = Mask(context, node, layer)) {
    // From the values the next layer reads (rounded, for quantized outputs).
    const reference::ValuesRef stored = ValuesOf(output, data.output);
    for (int i = 0; i < n; ++i) {
      reference::SetMaskBit(mask, i, layer.activation, stored[i]);
    }
  }
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  float* params =
      state::Params(port::Input(context, node, kState).As<uint8_t>());
  return data.exact_int8 ? EvalExactInt8(context, node, data, params)
                         : EvalFloat(context, node, data, params);
}

}  // namespace

const port::KernelDef kFullyConnectedKernel = {
    kFullyConnectedOpName,
    InitLinearOp<OpData, LinearKind::kFullyConnected, false>, nullptr, Prepare,
    Eval, nullptr};
const port::KernelDef kConv2DKernel = {
    kConv2DOpName, InitLinearOp<OpData, LinearKind::kConv2D, false>, nullptr,
    Prepare, Eval, nullptr};
const port::KernelDef kDepthwiseConv2DKernel = {
    kDepthwiseConv2DOpName,
    InitLinearOp<OpData, LinearKind::kDepthwiseConv2D, false>, nullptr, Prepare,
    Eval, nullptr};

}  // namespace tflmt
