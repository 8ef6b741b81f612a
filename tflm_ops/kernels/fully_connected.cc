// TFLMT_FULLY_CONNECTED: a fully-connected layer some of whose parts train.
//
// It replaces a frozen FULLY_CONNECTED that a method targets (lora, bias) or
// adds a new layer (head). Weights and bias are read either from the model
// (frozen, float32 or int8) or from the training state (trainable, float32);
// an optional LoRA term adds scale * B(A x) before the fused activation.
//
// With an int8 input and frozen int8 weights the output stays int8 and the
// trainable terms are added to the int32 accumulator, so with B = 0 (a fresh
// LoRA) the bytes equal those of the stock int8 kernel.
//
// Inputs:  0 x, 1 frozen weights (or -1), 2 frozen bias (or -1), 3 state
// Outputs: 0 y, 1 h = A x (float32 [batches, rank], kept for backward; LoRA)
#include <cmath>
#include <new>

#include "kernels/kernels.h"
#include "kernels/fully_connected_common.h"
#include "kernels/kernel_util.h"
#include "kernels/training_state.h"
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
  FullyConnectedLayer layer;
  int batches = 0;
  ActivationQuant input;
  port::DataType output_type = port::DataType::kNoType;
  reference::WeightsRef frozen_weights;
  const void* frozen_bias = nullptr;  // float32 or int32, from the model
  // Frozen int8 path: output zero point, clamp range, requantization.
  int32_t output_zero_point = 0;
  int32_t act_min = 0;
  int32_t act_max = 0;
  int32_t* multipliers = nullptr;  // per unit
  int* shifts = nullptr;           // per unit
  float* accumulator_scales = nullptr;  // input scale * weight scale, per unit
  // Scratch: dequantized input, and float terms added to int8 accumulators.
  int input_float_scratch = -1;
  int extra_scratch = -1;
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
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_FULLY_CONNECTED: bad options");
  const FullyConnectedLayer& layer = data->layer;
  TFLMT_ENSURE(port::NumInputs(node) == 4);
  TFLMT_ENSURE(port::NumOutputs(node) == (layer.has_lora() ? 2 : 1));

  port::TensorInfo input, output, state;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kInput, &input));
  TFLMT_ENSURE_OK(port::OutputInfo(context, node, kOutput, &output));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kState, &state));
  TFLMT_ENSURE_OK(PrepareStateTensor(state, layer));
  data->batches = BatchCount(input, layer.in_features);
  TFLMT_ENSURE_MSG(data->batches > 0 &&
                       output.FlatSize() == data->batches * layer.units,
                   "TFLMT_FULLY_CONNECTED: input/output shapes do not fit "
                   "[%d -> %d]",
                   layer.in_features, layer.units);
  TFLMT_ENSURE_OK(ActivationQuantOf(input, &data->input));
  data->output_type = output.type;
  if (!layer.trainable_weights()) {
    port::TensorInfo weights;
    TFLMT_ENSURE(port::HasInput(node, kWeights));
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kWeights, &weights));
    TFLMT_ENSURE_OK(PrepareFrozenWeights(weights, layer, &data->frozen_weights));
  }
  if (!layer.trainable_bias() && port::HasInput(node, kBias)) {
    port::TensorInfo bias;
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kBias, &bias));
    const bool int8_layer = input.type == port::DataType::kInt8 &&
                            !layer.trainable_weights();
    TFLMT_ENSURE_MSG(bias.constant_data != nullptr &&
                         bias.FlatSize() == layer.units &&
                         bias.type == (int8_layer ? port::DataType::kInt32
                                                  : port::DataType::kFloat32),
                     "TFLMT_FULLY_CONNECTED: bias must be a constant [units] "
                     "of int32 (int8 layer) or float32");
    data->frozen_bias = bias.constant_data;
  }
  if (layer.has_lora()) {
    port::TensorInfo hidden;
    TFLMT_ENSURE_OK(port::OutputInfo(context, node, kLoraHidden, &hidden));
    TFLMT_ENSURE_MSG(hidden.type == port::DataType::kFloat32 &&
                         hidden.FlatSize() == data->batches * layer.lora_rank,
                     "TFLMT_FULLY_CONNECTED: LoRA hidden must be float32 "
                     "[batches, rank]");
  }

  const bool int8_input = input.type == port::DataType::kInt8;
  const bool int8_path = int8_input && !layer.trainable_weights();
  if (int8_path) {
    // Frozen int8 layer: int8 out, requantized exactly like the stock kernel.
    TFLMT_ENSURE_MSG(data->frozen_weights.i8 != nullptr &&
                         output.type == port::DataType::kInt8,
                     "TFLMT_FULLY_CONNECTED: int8 input needs int8 weights "
                     "and an int8 output");
    data->output_zero_point = output.quant.zero_point;
    reference::QuantizedActivationRange(layer.activation, output.quant.scale,
                                        output.quant.zero_point, -128, 127,
                                        &data->act_min, &data->act_max);
    const size_t units = static_cast<size_t>(layer.units);
    data->multipliers = static_cast<int32_t*>(
        port::AllocatePersistent(context, units * sizeof(int32_t)));
    data->shifts =
        static_cast<int*>(port::AllocatePersistent(context, units * sizeof(int)));
    data->accumulator_scales = static_cast<float*>(
        port::AllocatePersistent(context, units * sizeof(float)));
    TFLMT_ENSURE(data->multipliers != nullptr && data->shifts != nullptr &&
                 data->accumulator_scales != nullptr);
    for (int o = 0; o < layer.units; ++o) {
      const double accumulator_scale =
          static_cast<double>(input.quant.scale) *
          static_cast<double>(data->frozen_weights.Scale(o));
      data->accumulator_scales[o] = static_cast<float>(accumulator_scale);
      reference::QuantizeMultiplier(
          accumulator_scale / static_cast<double>(output.quant.scale),
          &data->multipliers[o], &data->shifts[o]);
    }
    if (layer.has_lora() || layer.trainable_bias()) {
      TFLMT_ENSURE_OK(port::RequestScratch(
          context, sizeof(float) * data->batches * layer.units,
          &data->extra_scratch));
    }
  } else {
    TFLMT_ENSURE_MSG(output.type == port::DataType::kFloat32,
                     "TFLMT_FULLY_CONNECTED: output must be float32");
  }
  // Float math needs a float copy of a quantized input (the int8 path only
  // for its LoRA term).
  if (!int8_path || layer.has_lora()) {
    TFLMT_ENSURE_OK(RequestFloatCopy(context, data->input,
                                     data->batches * layer.in_features,
                                     &data->input_float_scratch));
  }
  return port::Status::kOk;
}

// Float terms of the layer that are not in the frozen int8 accumulator:
// trainable bias and the LoRA term. `extra` is [batches, units].
void AddTrainableTerms(const OpData& data, const float* x, float* params,
                       float* hidden, float* extra) {
  const FullyConnectedLayer& layer = data.layer;
  for (int b = 0; b < data.batches; ++b) {
    for (int o = 0; o < layer.units; ++o) {
      extra[b * layer.units + o] =
          layer.trainable_bias() ? params[layer.bias_offset + o] : 0.0f;
    }
  }
  if (layer.has_lora()) {
    reference::LoraForward(x, params + layer.lora_a_offset,
                           params + layer.lora_b_offset, layer.lora_scale,
                           data.batches, layer.in_features, layer.units,
                           layer.lora_rank, hidden, extra);
  }
}

port::Status EvalInt8(port::Context* context, const OpData& data,
                      const port::TensorView& input, float* params,
                      float* hidden, int8_t* y) {
  const FullyConnectedLayer& layer = data.layer;
  const int8_t* x = input.As<int8_t>();
  float* extra = nullptr;
  if (data.extra_scratch >= 0) {
    extra = static_cast<float*>(port::Scratch(context, data.extra_scratch));
    const float* x_float =
        layer.has_lora()
            ? FloatValues(context, input, data.input,
                          data.batches * layer.in_features,
                          data.input_float_scratch)
            : nullptr;
    AddTrainableTerms(data, x_float, params, hidden, extra);
  }
  const int32_t* bias = layer.trainable_bias()
                            ? nullptr
                            : static_cast<const int32_t*>(data.frozen_bias);
  for (int b = 0; b < data.batches; ++b) {
    const int8_t* xb = x + b * layer.in_features;
    for (int o = 0; o < layer.units; ++o) {
      int32_t acc = 0;
      reference::AccumulateInt8(xb, data.input.zero_point,
                                data.frozen_weights.i8 + o * layer.in_features,
                                bias != nullptr ? bias + o : nullptr, 1,
                                layer.in_features, 1, &acc);
      if (extra != nullptr) {
        // The term in accumulator units; acc is an integer, so rounding
        // the term rounds the sum.
        const float term =
            std::round(extra[b * layer.units + o] / data.accumulator_scales[o]);
        acc = reference::SaturatingAdd(acc, term);
      }
      int32_t out = reference::MultiplyByQuantizedMultiplier(
                        acc, data.multipliers[o], data.shifts[o]) +
                    data.output_zero_point;
      out = out < data.act_min ? data.act_min
                               : (out > data.act_max ? data.act_max : out);
      y[b * layer.units + o] = static_cast<int8_t>(out);
    }
  }
  return port::Status::kOk;
}

port::Status EvalFloat(port::Context* context, const OpData& data,
                       const port::TensorView& input, float* params,
                       float* hidden, float* y) {
  const FullyConnectedLayer& layer = data.layer;
  const float* x =
      FloatValues(context, input, data.input, data.batches * layer.in_features,
                  data.input_float_scratch);
  const reference::WeightsRef weights =
      CurrentWeights(layer, data.frozen_weights, params);
  reference::MatVecFloat(x, weights, data.batches, layer.in_features,
                         layer.units, /*accumulate=*/false, y);
  const float* bias = layer.trainable_bias()
                          ? params + layer.bias_offset
                          : static_cast<const float*>(data.frozen_bias);
  if (bias != nullptr) {
    for (int b = 0; b < data.batches; ++b) {
      for (int o = 0; o < layer.units; ++o) y[b * layer.units + o] += bias[o];
    }
  }
  if (layer.has_lora()) {
    reference::LoraForward(x, params + layer.lora_a_offset,
                           params + layer.lora_b_offset, layer.lora_scale,
                           data.batches, layer.in_features, layer.units,
                           layer.lora_rank, hidden, y);
  }
  const int n = data.batches * layer.units;
  for (int i = 0; i < n; ++i) {
    y[i] = reference::ApplyActivation(layer.activation, y[i]);
  }
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const port::TensorView input = port::Input(context, node, kInput);
  const port::TensorView state = port::Input(context, node, kState);
  const port::TensorView output = port::Output(context, node, kOutput);
  float* params = state::Params(state.As<uint8_t>());
  float* hidden = data.layer.has_lora()
                      ? port::Output(context, node, kLoraHidden).As<float>()
                      : nullptr;
  if (data.output_type == port::DataType::kInt8) {
    return EvalInt8(context, data, input, params, hidden, output.As<int8_t>());
  }
  return EvalFloat(context, data, input, params, hidden, output.As<float>());
}

}  // namespace

const port::KernelDef kFullyConnectedKernel = {
    kFullyConnectedOpName, Init, nullptr, Prepare, Eval, nullptr};

}  // namespace tflmt
