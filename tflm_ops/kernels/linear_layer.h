// What the trainable linear layers share: TFLMT_FULLY_CONNECTED,
// TFLMT_CONV_2D and TFLMT_DEPTHWISE_CONV_2D, and their _GRAD ops.
//
// A fully-connected layer is a 1x1 convolution over its rows, so all three
// are one layer type with a kind. Each part of a layer lives either frozen in
// the model (float32 or int8 weights, float32 or int32 bias) or trainable in
// the training state (float32), and an optional LoRA branch
// (reference/lora.h) adds to it before the fused activation. One options
// layout describes all of it; this file parses it and does the Prepare checks
// the six ops share. The math is in reference/linear.h, lora.h, linear_int8.h.
#ifndef TFLM_OPS_KERNELS_LINEAR_LAYER_H_
#define TFLM_OPS_KERNELS_LINEAR_LAYER_H_

#include <cstddef>
#include <cstdint>

#include "kernels/constants.h"
#include "kernels/kernel_util.h"
#include "kernels/options.h"
#include "port/port.h"
#include "reference/lora.h"
#include "reference/types.h"

namespace tflmt {

struct LinearLayer {
  LinearKind kind = LinearKind::kFullyConnected;
  bool is_grad = false;  // read by the _GRAD op (names the op in messages)
  reference::Activation activation = reference::Activation::kNone;
  reference::ConvGeometry geometry;  // spatial sizes are completed in Prepare
  // Offsets count float32 values from the start of the state's parameters;
  // -1: the part is frozen in the model (or absent).
  int weight_offset = -1;
  int bias_offset = -1;
  int lora_rank = 0;
  int lora_a_offset = -1;
  int lora_b_offset = -1;
  float lora_scale = 0.0f;
  // Backward op only: dy arrives pooled over the output positions (the layer
  // feeds a global average pool / MEAN), one value per batch and channel.
  bool dy_pooled = false;
  // The forward op also writes a bit per output (activation derivative 1),
  // and the backward op reads it instead of the output itself, which may then
  // be freed as soon as the next layer has read it.
  bool activation_mask = false;
  int mask_bytes() const { return (geometry.out_pixels() * geometry.out_c + 7) / 8; }
  // The weights train as delta rows of some output channels only
  // (reference/channel_rows.h): weight_offset holds `trained_rows` rows, and
  // both ops read the channel -> row map as one more constant input.
  bool channel_rows = false;
  int trained_rows = 0;  // from the map, in Prepare

  bool trainable_weights() const { return weight_offset >= 0; }
  bool trainable_bias() const { return bias_offset >= 0; }
  bool has_lora() const { return lora_rank > 0; }
  bool has_trainable_part() const {
    return trainable_weights() || trainable_bias() || has_lora();
  }
  bool depthwise() const { return kind == LinearKind::kDepthwiseConv2D; }
  // Filter values per output channel.
  int taps() const { return geometry.k_h * geometry.k_w; }
  int weight_count() const {
    return depthwise() ? taps() * geometry.out_c
                       : geometry.out_c * taps() * geometry.in_c;
  }
  // Float32 values of the trainable weights in the state.
  int trained_weight_count() const {
    return channel_rows ? trained_rows * (depthwise() ? taps() : taps() * geometry.in_c)
                        : weight_count();
  }
  // Frozen weights are read when the weights do not train, or train as
  // delta rows on top of them.
  bool reads_frozen_weights() const { return !trainable_weights() || channel_rows; }
  int lora_a_count() const {
    return depthwise() ? lora_rank * taps() : lora_rank * taps() * geometry.in_c;
  }
  // LoRA's hidden activations (FC / conv only): kept for backward, or
  // recomputed there a row at a time (reference::LoraHiddenRows).
  int lora_hidden_count() const {
    return depthwise() ? 0 : geometry.out_pixels() * lora_rank;
  }
  // LoRA's parameters and gradients inside the state's areas.
  reference::LoraParams Lora(const float* params) const {
    reference::LoraParams lora;
    lora.rank = lora_rank;
    lora.scale = lora_scale;
    lora.a = params + lora_a_offset;
    lora.b = params + lora_b_offset;
    return lora;
  }
  reference::LoraGrads LoraGradsIn(float* grads) const {
    reference::LoraGrads g;
    g.a = grads + lora_a_offset;
    g.b = grads + lora_b_offset;
    return g;
  }
  // The op reading this layer, e.g. "TFLMT_CONV_2D_GRAD".
  const char* name() const;
};

// Init of all six ops: options blob -> layer (null, after logging, when
// malformed or of another kind than the op reading it).
template <typename OpData, LinearKind kKind, bool kGrad>
void* InitLinearOp(port::Context* context, const char* options, size_t length);

bool ParseLinearLayer(OptionsReader& reader, LinearKind kind, bool is_grad,
                      LinearLayer* layer);

// Completes the geometry from the layer's input tensor (or anything shaped
// like it) and checks the number of output values (gradients may arrive
// flattened, so not their shape).
port::Status PrepareGeometry(const port::TensorInfo& input, int output_values,
                             LinearLayer* layer);
// The same when nothing shaped like the input is at hand (a backward op that
// needs neither x nor dx): only the output side is known and used.
port::Status PrepareOutputGeometry(int output_values, LinearLayer* layer);

// Checks a frozen filter tensor (float32 or int8, per-channel or per-tensor
// scales, zero point 0) and points `weights` at it.
port::Status PrepareFrozenWeights(const port::TensorInfo& info,
                                  const LinearLayer& layer,
                                  reference::WeightsRef* weights);

// Checks the channel -> row map (a constant int32 [out_c] of rows or -1,
// every row 0..n-1 used once), sets layer->trained_rows and points `map` at it.
port::Status PrepareChannelRows(const port::TensorInfo& info, LinearLayer* layer,
                                const int32_t** map);

// Checks the state tensor and that every trainable part lies inside it.
port::Status PrepareState(const port::TensorInfo& state,
                          const LinearLayer& layer);

// The filter the layer computes with now: frozen, or trainable from the state.
reference::WeightsRef CurrentWeights(const LinearLayer& layer,
                                     const reference::WeightsRef& frozen,
                                     float* params);

// ---- implementation of the template -------------------------------------------
uint8_t LinearOptionsVersion(LinearKind kind, bool is_grad);
const char* LinearOpName(LinearKind kind, bool is_grad);

template <typename OpData, LinearKind kKind, bool kGrad>
void* InitLinearOp(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(
      context, options, length, LinearOpName(kKind, kGrad),
      LinearOptionsVersion(kKind, kGrad), [](OptionsReader& reader, OpData* data) {
        return ParseLinearLayer(reader, kKind, kGrad, &data->layer);
      });
}

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_LINEAR_LAYER_H_
