#include "kernels/adapter_common.h"

#include "kernels/training_state.h"

namespace tflmt {

bool ParseAdapterLayer(OptionsReader& reader, AdapterLayer* layer) {
  layer->activation = static_cast<reference::Activation>(reader.U8());
  layer->features = reader.I32();
  layer->bottleneck = reader.I32();
  layer->down_offset = reader.I32();
  layer->down_bias_offset = reader.I32();
  layer->up_offset = reader.I32();
  layer->up_bias_offset = reader.I32();
  const int activation = static_cast<int>(layer->activation);
  const bool known_activation =
      (activation >= 0 && activation <= 4) ||
      layer->activation == reference::Activation::kLogistic;
  return layer->features > 0 && layer->bottleneck > 0 && known_activation;
}

port::Status PrepareAdapterState(const port::TensorInfo& state,
                                 const AdapterLayer& layer, const char* op_name) {
  TFLMT_ENSURE_MSG(state.type == port::DataType::kUInt8 && state.is_variable &&
                       state.bytes > state::kHeaderBytes,
                   "%s: state must be a uint8 variable", op_name);
  // Parameters and gradients fill at least half of the payload (see
  // PrepareState in linear_layer.cc).
  const long half = static_cast<long>(
      (state.bytes - state::kHeaderBytes) / sizeof(float) / 2);
  const long f = layer.features, k = layer.bottleneck;
  const long ends[] = {layer.down_offset + k * f, layer.down_bias_offset + k,
                       layer.up_offset + f * k, layer.up_bias_offset + f};
  const int starts[] = {layer.down_offset, layer.down_bias_offset,
                        layer.up_offset, layer.up_bias_offset};
  for (int i = 0; i < 4; ++i) {
    TFLMT_ENSURE_MSG(starts[i] >= 0 && ends[i] <= half,
                     "%s: a trainable tensor lies outside the state", op_name);
  }
  return port::Status::kOk;
}

reference::AdapterWeights AdapterWeightsIn(const AdapterLayer& layer,
                                           float* params) {
  return {params + layer.down_offset, params + layer.down_bias_offset,
          params + layer.up_offset, params + layer.up_bias_offset};
}

reference::AdapterGrads AdapterGradsIn(const AdapterLayer& layer,
                                       float* grads) {
  return {grads + layer.down_offset, grads + layer.down_bias_offset,
          grads + layer.up_offset, grads + layer.up_bias_offset};
}

}  // namespace tflmt
