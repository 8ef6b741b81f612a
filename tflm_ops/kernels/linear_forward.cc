// TFLMT_FULLY_CONNECTED, TFLMT_CONV_2D, TFLMT_DEPTHWISE_CONV_2D: a linear
// layer some of whose parts train (see linear_layer.h).
//
// They replace the frozen layer a method targets (lora, bias, sparse) or add
// a new one (head). With an int8 input and output and frozen int8 weights
// the layer stays integer: trainable terms (bias, LoRA) are added to the
// int32 accumulator, so with B = 0 the bytes equal the stock kernel's.
// Otherwise it computes in float32 and stores float32 or quantized values.
//
// Inputs:  0 x, 1 frozen weights (or -1), 2 frozen bias (or -1), 3 state
// Outputs: 0 y, 1 LoRA hidden conv_A(x) (FC / CONV_2D with LoRA, unless the
//          converter leaves it out for the backward op to recompute),
//          last: the activation mask (bit set where activation' is 1), when
//          the options ask for it
#include <cmath>
#include <new>

#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/linear_layer.h"
#include "kernels/training_state.h"
#include "reference/conv.h"
#include "reference/fully_connected.h"
#include "reference/quantization.h"

namespace tflmt {
namespace {

constexpr int kInput = 0;
constexpr int kWeights = 1;
constexpr int kBias = 2;
constexpr int kState = 3;
constexpr int kOutput = 0;
constexpr int kLoraHidden = 1;

struct OpData {
  LinearLayer layer;
  ActivationQuant input;
  ActivationQuant output;
  reference::WeightsRef frozen_weights;
  const void* frozen_bias = nullptr;  // int32 (exact int8 path) or float32
  bool exact_int8 = false;
  bool keeps_lora_hidden = false;  // conv_A(x) is an output (else recomputed)
  // Exact int8 path: requantization per output channel and the clamp range.
  int32_t act_min = 0;
  int32_t act_max = 0;
  int32_t* multipliers = nullptr;
  int* shifts = nullptr;
  float* accumulator_scales = nullptr;  // input scale * weight scale
  int result_scratch = -1;        // float result before quantizing
  int lora_delta_scratch = -1;    // depthwise LoRA filter delta
  // conv_A(x) at one position, when it is not kept: rank floats, persistent
  // (cheaper than one more scratch buffer and its bookkeeping).
  float* hidden_row = nullptr;
};

template <LinearKind kKind>
void* Init(port::Context* context, const char* options, size_t length) {
  void* memory = port::AllocatePersistent(context, sizeof(OpData));
  if (memory == nullptr) return nullptr;
  OpData* data = new (memory) OpData();
  return ParseLinearLayer(options, length, kKind, &data->layer) ? data : nullptr;
}

port::Status PrepareExactInt8(port::Context* context, const port::TensorInfo& output,
                              OpData* data) {
  const LinearLayer& layer = data->layer;
  reference::QuantizedActivationRange(layer.activation, output.quant.scale,
                                      output.quant.zero_point, -128, 127,
                                      &data->act_min, &data->act_max);
  const size_t channels = static_cast<size_t>(layer.geometry.out_c);
  data->multipliers = static_cast<int32_t*>(
      port::AllocatePersistent(context, channels * sizeof(int32_t)));
  data->shifts =
      static_cast<int*>(port::AllocatePersistent(context, channels * sizeof(int)));
  data->accumulator_scales = static_cast<float*>(
      port::AllocatePersistent(context, channels * sizeof(float)));
  TFLMT_ENSURE(data->multipliers != nullptr && data->shifts != nullptr &&
               data->accumulator_scales != nullptr);
  for (size_t c = 0; c < channels; ++c) {
    const double accumulator_scale =
        static_cast<double>(data->input.scale) *
        static_cast<double>(data->frozen_weights.Scale(static_cast<int>(c)));
    data->accumulator_scales[c] = static_cast<float>(accumulator_scale);
    reference::QuantizeMultiplier(
        accumulator_scale / static_cast<double>(output.quant.scale),
        &data->multipliers[c], &data->shifts[c]);
  }
  return port::Status::kOk;
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "tflm-train linear layer: bad options");
  LinearLayer& layer = data->layer;
  const bool lora_hidden = layer.has_lora() && !layer.depthwise();
  const int mask_outputs = layer.activation_mask ? 1 : 0;
  data->keeps_lora_hidden =
      lora_hidden && port::NumOutputs(node) == 2 + mask_outputs;
  TFLMT_ENSURE(port::NumInputs(node) == 4);
  TFLMT_ENSURE(port::NumOutputs(node) ==
               1 + (data->keeps_lora_hidden ? 1 : 0) + mask_outputs);

  port::TensorInfo input, output, state;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kInput, &input));
  TFLMT_ENSURE_OK(port::OutputInfo(context, node, kOutput, &output));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kState, &state));
  TFLMT_ENSURE_OK(PrepareGeometry(input, output.FlatSize(), &layer));
  TFLMT_ENSURE_OK(PrepareState(state, layer));
  TFLMT_ENSURE_OK(ActivationQuantOf(input, &data->input));
  TFLMT_ENSURE_OK(ActivationQuantOf(output, &data->output));

  if (!layer.trainable_weights()) {
    port::TensorInfo weights;
    TFLMT_ENSURE(port::HasInput(node, kWeights));
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kWeights, &weights));
    TFLMT_ENSURE_OK(PrepareFrozenWeights(weights, layer, &data->frozen_weights));
  }
  data->exact_int8 = input.type == port::DataType::kInt8 &&
                     output.type == port::DataType::kInt8 &&
                     data->frozen_weights.i8 != nullptr;
  if (!layer.trainable_bias() && port::HasInput(node, kBias)) {
    port::TensorInfo bias;
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kBias, &bias));
    const port::DataType bias_type =
        data->exact_int8 ? port::DataType::kInt32 : port::DataType::kFloat32;
    TFLMT_ENSURE_MSG(bias.constant_data != nullptr &&
                         bias.FlatSize() == layer.geometry.out_c &&
                         bias.type == bias_type,
                     "%s: frozen bias must be a constant [%d] of %s", layer.name(),
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
                     "%s: no arena left for a LoRA row", layer.name());
  }
  if (data->keeps_lora_hidden) {
    port::TensorInfo hidden;
    TFLMT_ENSURE_OK(port::OutputInfo(context, node, kLoraHidden, &hidden));
    TFLMT_ENSURE_MSG(hidden.type == port::DataType::kFloat32 &&
                         hidden.FlatSize() == layer.lora_hidden_count(),
                     "%s: LoRA hidden must be float32 of %d values", layer.name(),
                     layer.lora_hidden_count());
  }
  if (layer.activation_mask) {
    port::TensorInfo mask;
    TFLMT_ENSURE_OK(port::OutputInfo(context, node, port::NumOutputs(node) - 1, &mask));
    TFLMT_ENSURE_MSG(mask.type == port::DataType::kUInt8 &&
                         mask.FlatSize() == layer.mask_bytes(),
                     "%s: activation mask must be uint8 [%d]", layer.name(),
                     layer.mask_bytes());
  }
  if (layer.has_lora() && layer.depthwise()) {
    TFLMT_ENSURE_OK(port::RequestScratch(context,
                                         sizeof(float) * layer.weight_count(),
                                         &data->lora_delta_scratch));
  }
  return port::Status::kOk;
}

// Float inputs of the trainable terms, prepared once per invocation.
struct LoraInputs {
  reference::ValuesRef x;         // x's real values
  bool low_rank = false;          // FC / conv: B conv_A(x), rows in `hidden`
  LoraHiddenRows hidden;
  const float* delta = nullptr;   // depthwise: filter delta [taps, out_c]
};

LoraInputs ComputeLora(port::Context* context, port::Node* node,
                       const OpData& data, const port::TensorView& input,
                       const float* params) {
  LoraInputs lora;
  const LinearLayer& layer = data.layer;
  if (!layer.has_lora()) return lora;
  lora.x = ValuesOf(input, data.input);
  if (layer.depthwise()) {
    float* delta =
        static_cast<float*>(port::Scratch(context, data.lora_delta_scratch));
    DepthwiseLoraDelta(layer, params, delta);
    lora.delta = delta;
  } else {
    lora.low_rank = true;
    lora.hidden.layer = &layer;
    if (data.keeps_lora_hidden) {
      float* hidden = port::Output(context, node, kLoraHidden).As<float>();
      reference::WeightsRef a;
      a.f32 = params + layer.lora_a_offset;
      LinearForward(LoraALayer(layer), a, lora.x, /*accumulate=*/false, hidden);
      lora.hidden.kept = hidden;
    } else {
      lora.hidden.a = params + layer.lora_a_offset;
      lora.hidden.x = lora.x;
      lora.hidden.row = data.hidden_row;
    }
  }
  return lora;
}

uint8_t* Mask(port::Context* context, port::Node* node, const LinearLayer& layer) {
  if (!layer.activation_mask) return nullptr;
  return port::Output(context, node, port::NumOutputs(node) - 1).As<uint8_t>();
}

void SetMaskBit(uint8_t* mask, int i, reference::Activation activation, float y) {
  const uint8_t bit = static_cast<uint8_t>(1u << (i & 7));
  if (reference::ActivationDerivativeFromOutput(activation, y) != 0.0f) {
    mask[i >> 3] |= bit;
  } else {
    mask[i >> 3] &= static_cast<uint8_t>(~bit);
  }
}

port::Status EvalExactInt8(port::Context* context, port::Node* node,
                           const OpData& data, const float* params) {
  const LinearLayer& layer = data.layer;
  const reference::ConvGeometry& g = layer.geometry;
  const port::TensorView input = port::Input(context, node, kInput);
  const LoraInputs lora = ComputeLora(context, node, data, input, params);
  const int8_t* x = input.As<int8_t>();
  const int8_t* w = data.frozen_weights.i8;
  const int32_t* bias = static_cast<const int32_t*>(data.frozen_bias);
  const float* b_mat = layer.has_lora() ? params + layer.lora_b_offset : nullptr;
  const bool has_terms = layer.trainable_bias() || layer.has_lora();
  int8_t* y = port::Output(context, node, kOutput).As<int8_t>();
  uint8_t* mask = Mask(context, node, layer);

  for (int b = 0; b < g.batches; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        const int pixel = (b * g.out_h + oy) * g.out_w + ox;
        const float* h = lora.low_rank ? lora.hidden.Row(pixel) : nullptr;
        for (int co = 0; co < g.out_c; ++co) {
          int32_t acc = 0;
          if (layer.kind == LinearKind::kFullyConnected) {
            reference::AccumulateInt8(x + b * g.in_c, data.input.zero_point,
                                      w + co * g.in_c, nullptr, 1, g.in_c, 1,
                                      &acc);
          } else if (layer.kind == LinearKind::kConv2D) {
            acc = reference::ConvAccumulatorInt8(x, data.input.zero_point, w, g,
                                                 b, oy, ox, co);
          } else {
            acc = reference::DepthwiseAccumulatorInt8(x, data.input.zero_point,
                                                      w, g, b, oy, ox, co);
          }
          if (bias != nullptr) acc += bias[co];
          if (has_terms) {
            float term = layer.trainable_bias() ? params[layer.bias_offset + co] : 0.0f;
            if (h != nullptr) {
              float sum = 0.0f;
              for (int k = 0; k < layer.lora_rank; ++k) {
                sum += b_mat[co * layer.lora_rank + k] * h[k];
              }
              term += layer.lora_scale * sum;
            } else if (lora.delta != nullptr) {
              term += reference::DepthwiseOutputAt(lora.x, lora.delta, g, b, oy,
                                                   ox, co);
            }
            // The term in accumulator units; acc is an integer, so rounding
            // the term rounds the sum.
            acc = reference::SaturatingAdd(
                acc, std::round(term / data.accumulator_scales[co]));
          }
          int32_t out = reference::MultiplyByQuantizedMultiplier(
                            acc, data.multipliers[co], data.shifts[co]) +
                        data.output.zero_point;
          out = out < data.act_min ? data.act_min
                                   : (out > data.act_max ? data.act_max : out);
          y[pixel * g.out_c + co] = static_cast<int8_t>(out);
          if (mask != nullptr) {
            SetMaskBit(mask, pixel * g.out_c + co, layer.activation,
                       data.output.Dequantize(out));
          }
        }
      }
    }
  }
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
  LinearForward(layer, CurrentWeights(layer, data.frozen_weights, params), x,
                /*accumulate=*/false, out);
  const float* bias = layer.trainable_bias()
                          ? params + layer.bias_offset
                          : static_cast<const float*>(data.frozen_bias);
  const int pixels = g.out_pixels();
  if (bias != nullptr) {
    for (int p = 0; p < pixels; ++p) {
      for (int c = 0; c < g.out_c; ++c) out[p * g.out_c + c] += bias[c];
    }
  }
  const LoraInputs lora = ComputeLora(context, node, data, input, params);
  if (lora.low_rank) {
    for (int p = 0; p < pixels; ++p) {
      reference::LowRankForwardRow(lora.hidden.Row(p),
                                   params + layer.lora_b_offset,
                                   layer.lora_scale, g.out_c, layer.lora_rank,
                                   out + p * g.out_c);
    }
  } else if (lora.delta != nullptr) {
    reference::WeightsRef delta;
    delta.f32 = lora.delta;
    reference::DepthwiseForward(lora.x, delta, g, /*accumulate=*/true, out);
  }
  const int n = pixels * g.out_c;
  for (int i = 0; i < n; ++i) {
    out[i] = reference::ApplyActivation(layer.activation, out[i]);
  }
  if (!data.output.is_float()) StoreValues(out, n, data.output, output);
  if (uint8_t* mask = Mask(context, node, layer)) {
    // From the values the next layer reads (rounded, for quantized outputs).
    const reference::ValuesRef stored = ValuesOf(output, data.output);
    for (int i = 0; i < n; ++i) SetMaskBit(mask, i, layer.activation, stored[i]);
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
    kFullyConnectedOpName, Init<LinearKind::kFullyConnected>, nullptr, Prepare,
    Eval, nullptr};
const port::KernelDef kConv2DKernel = {kConv2DOpName, Init<LinearKind::kConv2D>,
                                       nullptr, Prepare, Eval, nullptr};
const port::KernelDef kDepthwiseConv2DKernel = {
    kDepthwiseConv2DOpName, Init<LinearKind::kDepthwiseConv2D>, nullptr,
    Prepare, Eval, nullptr};

}  // namespace tflmt
