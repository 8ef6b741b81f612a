#include "kernels/fully_connected_common.h"

#include "kernels/options.h"
#include "kernels/training_state.h"

namespace tflmt {

bool ParseFullyConnectedLayer(const char* buffer, size_t length,
                              FullyConnectedLayer* layer) {
  OptionsReader reader(buffer, length);
  if (!reader.ReadVersion()) {
    port::Log("TFLMT fully connected: options version is not %d",
              kOptionsVersion);
    return false;
  }
  layer->activation = static_cast<reference::Activation>(reader.U8());
  layer->in_features = reader.I32();
  layer->units = reader.I32();
  layer->weight_offset = reader.I32();
  layer->bias_offset = reader.I32();
  layer->lora_rank = reader.I32();
  layer->lora_a_offset = reader.I32();
  layer->lora_b_offset = reader.I32();
  layer->lora_scale = reader.F32();
  if (!reader.Finished()) {
    port::Log("TFLMT fully connected: malformed options (%d bytes)",
              static_cast<int>(length));
    return false;
  }
  const int activation = static_cast<int>(layer->activation);
  if (layer->in_features <= 0 || layer->units <= 0 || layer->lora_rank < 0 ||
      activation < 0 || activation > 4) {
    port::Log("TFLMT fully connected: invalid options");
    return false;
  }
  return true;
}

port::Status PrepareFrozenWeights(const port::TensorInfo& info,
                                  const FullyConnectedLayer& layer,
                                  reference::WeightsRef* weights) {
  TFLMT_ENSURE_MSG(info.constant_data != nullptr,
                   "TFLMT fully connected: frozen weights must be constant");
  TFLMT_ENSURE_MSG(info.rank == 2 && info.dims[0] == layer.units &&
                       info.dims[1] == layer.in_features,
                   "TFLMT fully connected: weights are not [%d, %d]",
                   layer.units, layer.in_features);
  if (info.type == port::DataType::kFloat32) {
    weights->f32 = static_cast<const float*>(info.constant_data);
  } else if (info.type == port::DataType::kInt8) {
    weights->i8 = static_cast<const int8_t*>(info.constant_data);
    weights->scale = info.quant.scale;
    if (info.quant.num_channels > 1) {
      TFLMT_ENSURE_MSG(info.quant.num_channels == layer.units &&
                           info.quant.quantized_dimension == 0,
                       "TFLMT fully connected: per-channel weights must be "
                       "quantized along the units");
      weights->channel_scales = info.quant.channel_scales;
    }
    TFLMT_ENSURE_MSG(info.quant.zero_point == 0,
                     "TFLMT fully connected: int8 weights need zero point 0");
  } else {
    TFLMT_ENSURE_MSG(false,
                     "TFLMT fully connected: weights of type %d unsupported",
                     static_cast<int>(info.type));
  }
  return port::Status::kOk;
}

port::Status PrepareStateTensor(const port::TensorInfo& info,
                                const FullyConnectedLayer& layer) {
  TFLMT_ENSURE_MSG(info.type == port::DataType::kUInt8 && info.is_variable &&
                       info.bytes > state::kHeaderBytes,
                   "TFLMT fully connected: state must be a uint8 variable");
  // Parameters and their gradients take at least half of the payload, so a
  // part that ends inside that half can be read and its gradient written
  // without leaving the tensor, whatever the optimizer.
  const long half = static_cast<long>(
      (info.bytes - state::kHeaderBytes) / sizeof(float) / 2);
  struct Part {
    int offset;
    long size;
  };
  const long in = layer.in_features, units = layer.units,
             rank = layer.lora_rank;
  const Part parts[] = {{layer.weight_offset, units * in},
                        {layer.bias_offset, units},
                        {layer.lora_a_offset, rank * in},
                        {layer.lora_b_offset, units * rank}};
  for (const Part& part : parts) {
    TFLMT_ENSURE_MSG(part.offset < 0 || part.offset + part.size <= half,
                     "TFLMT fully connected: a trainable part lies outside "
                     "the state (offset %d)",
                     part.offset);
  }
  TFLMT_ENSURE_MSG(!layer.has_lora() || (layer.lora_a_offset >= 0 &&
                                         layer.lora_b_offset >= 0),
                   "TFLMT fully connected: LoRA needs both A and B");
  return port::Status::kOk;
}

reference::WeightsRef CurrentWeights(const FullyConnectedLayer& layer,
                                     const reference::WeightsRef& frozen,
                                     float* params) {
  if (!layer.trainable_weights()) return frozen;
  reference::WeightsRef trained;
  trained.f32 = params + layer.weight_offset;
  return trained;
}

int BatchCount(const port::TensorInfo& input, int in_features) {
  const int size = input.FlatSize();
  return size % in_features == 0 ? size / in_features : -1;
}

}  // namespace tflmt
