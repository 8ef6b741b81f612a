// What TFLMT_FULLY_CONNECTED and TFLMT_FULLY_CONNECTED_GRAD share: one options
// layout describing the layer (where each part lives: frozen in the model or
// trainable in the training state) and the frozen-weight lookup.
#ifndef TFLM_OPS_KERNELS_FULLY_CONNECTED_COMMON_H_
#define TFLM_OPS_KERNELS_FULLY_CONNECTED_COMMON_H_

#include <cstdint>

#include "port/port.h"
#include "reference/fully_connected.h"
#include "reference/quantization.h"

namespace tflmt {

// Offsets count float32 values from the start of the state's parameters;
// -1 means "not trainable" (the part is frozen in the model, or absent).
struct FullyConnectedLayer {
  reference::Activation activation = reference::Activation::kNone;
  int in_features = 0;
  int units = 0;
  int weight_offset = -1;
  int bias_offset = -1;
  int lora_rank = 0;
  int lora_a_offset = -1;
  int lora_b_offset = -1;
  float lora_scale = 0.0f;

  bool trainable_weights() const { return weight_offset >= 0; }
  bool trainable_bias() const { return bias_offset >= 0; }
  bool has_lora() const { return lora_rank > 0; }
  bool has_trainable_part() const {
    return trainable_weights() || trainable_bias() || has_lora();
  }
};

// Reads the options blob; false (after logging) when it is malformed.
bool ParseFullyConnectedLayer(const char* buffer, size_t length,
                              FullyConnectedLayer* layer);

// Checks a frozen weight tensor against the layer and fills `weights`
// (pointer into the model plus its scales). For float32 or int8 weights.
port::Status PrepareFrozenWeights(const port::TensorInfo& info,
                                  const FullyConnectedLayer& layer,
                                  reference::WeightsRef* weights);

// Checks the training-state tensor and that the layer's trainable parts fit.
port::Status PrepareStateTensor(const port::TensorInfo& info,
                                const FullyConnectedLayer& layer);

// The weights the layer computes with this invocation: frozen ones from the
// model, or the current trainable ones from the state.
reference::WeightsRef CurrentWeights(const FullyConnectedLayer& layer,
                                     const reference::WeightsRef& frozen,
                                     float* params);

// Number of rows of a [..., in_features] input.
int BatchCount(const port::TensorInfo& input, int in_features);

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_FULLY_CONNECTED_COMMON_H_
