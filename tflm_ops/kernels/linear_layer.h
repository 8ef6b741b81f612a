// What the trainable linear layers share: TFLMT_FULLY_CONNECTED,
// TFLMT_CONV_2D and TFLMT_DEPTHWISE_CONV_2D, and their _GRAD ops.
//
// A fully-connected layer is a 1x1 convolution over its rows, so all three
// are one layer type with a kind. Each part of a layer lives either frozen in
// the model (float32 or int8 weights, float32 or int32 bias) or trainable in
// the training state (float32), and an optional LoRA branch adds
//   FC / CONV_2D:       scale * B conv_A(x)   A [r, k_h, k_w, in_c], B [out_c, r]
//   DEPTHWISE_CONV_2D:  depthwise(x, scale * B A)   A [r, k_h * k_w], B [out_c, r]
// before the fused activation. One options layout describes all of it.
#ifndef TFLM_OPS_KERNELS_LINEAR_LAYER_H_
#define TFLM_OPS_KERNELS_LINEAR_LAYER_H_

#include <cstddef>
#include <cstdint>

#include "kernels/kernel_util.h"
#include "port/port.h"
#include "reference/conv.h"
#include "reference/fully_connected.h"
#include "reference/quantization.h"

namespace tflmt {

enum class LinearKind : uint8_t {
  kFullyConnected = 0,
  kConv2D = 1,
  kDepthwiseConv2D = 2,
};

struct LinearLayer {
  LinearKind kind = LinearKind::kFullyConnected;
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
  int lora_a_count() const {
    return depthwise() ? lora_rank * taps() : lora_rank * taps() * geometry.in_c;
  }
  // LoRA's hidden activations (FC / conv only): kept for backward, or
  // recomputed there a row at a time (LoraHiddenRows).
  int lora_hidden_count() const {
    return depthwise() ? 0 : geometry.out_pixels() * lora_rank;
  }
  const char* name() const;
};

// Options blob -> layer; false (after logging) when malformed or of another
// kind than the op reading it.
bool ParseLinearLayer(const char* buffer, size_t length, LinearKind kind,
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

// Checks the state tensor and that every trainable part lies inside it.
port::Status PrepareState(const port::TensorInfo& state,
                          const LinearLayer& layer);

// The filter the layer computes with now: frozen, or trainable from the state.
reference::WeightsRef CurrentWeights(const LinearLayer& layer,
                                     const reference::WeightsRef& frozen,
                                     float* params);

// out (+)= the layer's linear map of x (float math, no bias or activation).
void LinearForward(const LinearLayer& layer, const reference::WeightsRef& w,
                   const reference::ValuesRef& x, bool accumulate, float* out);
// dx (+)= its transpose applied to dz.
void LinearInputGrad(const LinearLayer& layer, const reference::WeightsRef& w,
                     const reference::GradRows& dz, bool accumulate, float* dx);
// dw += its weight gradient.
void LinearWeightGrad(const LinearLayer& layer, const reference::GradRows& dz,
                      const reference::ValuesRef& x, float* dw);

// LoRA's A branch (FC / CONV_2D) as a layer of its own: the same geometry
// with `rank` output channels.
LinearLayer LoraALayer(const LinearLayer& layer);

// LoRA's hidden conv_A(x) (FC / CONV_2D), one output position at a time.
// Read from the tensor the forward op kept for the backward op, or, where the
// converter chose not to keep it, recomputed from x (which A's gradient reads
// anyway): rank * taps * in_c multiply-adds per position, rank/out_c of the
// layer's own work, instead of pixels * rank floats of arena held from the
// forward op to the backward op.
struct LoraHiddenRows {
  const LinearLayer* layer = nullptr;
  const float* kept = nullptr;  // [pixels, rank], or null: recompute
  const float* a = nullptr;     // LoRA A, for recomputing
  reference::ValuesRef x;       // the layer's input, for recomputing
  float* row = nullptr;         // rank floats of scratch, for recomputing

  const float* Row(int pixel) const;
};

// Depthwise LoRA: the filter delta scale * B A, laid out like a depthwise
// filter [k_h, k_w, out_c] (float32, `delta` holds weight_count() values).
void DepthwiseLoraDelta(const LinearLayer& layer, const float* params,
                        float* delta);

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_LINEAR_LAYER_H_
