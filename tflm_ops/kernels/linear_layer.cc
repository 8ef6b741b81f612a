#include "kernels/linear_layer.h"

#include "kernels/training_state.h"

namespace tflmt {

const char* LinearOpName(LinearKind kind, bool is_grad) {
  switch (kind) {
    case LinearKind::kConv2D:
      return is_grad ? kConv2DGradOpName : kConv2DOpName;
    case LinearKind::kDepthwiseConv2D:
      return is_grad ? kDepthwiseConv2DGradOpName : kDepthwiseConv2DOpName;
    default:
      return is_grad ? kFullyConnectedGradOpName : kFullyConnectedOpName;
  }
}

uint8_t LinearOptionsVersion(LinearKind kind, bool is_grad) {
  switch (kind) {
    case LinearKind::kConv2D:
      return is_grad ? kConv2DGradOptionsVersion : kConv2DOptionsVersion;
    case LinearKind::kDepthwiseConv2D:
      return is_grad ? kDepthwiseConv2DGradOptionsVersion
                     : kDepthwiseConv2DOptionsVersion;
    default:
      return is_grad ? kFullyConnectedGradOptionsVersion
                     : kFullyConnectedOptionsVersion;
  }
}

const char* LinearLayer::name() const { return LinearOpName(kind, is_grad); }

bool ParseLinearLayer(OptionsReader& reader, LinearKind kind, bool is_grad,
                      LinearLayer* layer) {
  const uint8_t blob_kind = reader.U8();
  layer->kind = kind;
  layer->is_grad = is_grad;
  layer->activation = static_cast<reference::Activation>(reader.U8());
  reference::ConvGeometry& g = layer->geometry;
  g.k_h = reader.I32();
  g.k_w = reader.I32();
  g.stride_h = reader.I32();
  g.stride_w = reader.I32();
  g.dilation_h = reader.I32();
  g.dilation_w = reader.I32();
  g.pad_top = reader.I32();
  g.pad_left = reader.I32();
  g.depth_multiplier = reader.I32();
  g.in_c = reader.I32();
  g.out_c = reader.I32();
  g.out_h = reader.I32();
  g.out_w = reader.I32();
  layer->weight_offset = reader.I32();
  layer->bias_offset = reader.I32();
  layer->lora_rank = reader.I32();
  layer->lora_a_offset = reader.I32();
  layer->lora_b_offset = reader.I32();
  layer->lora_scale = reader.F32();
  const uint8_t flags = reader.U8();
  layer->dy_pooled = (flags & static_cast<uint8_t>(GradFlag::kDyPooled)) != 0;
  layer->activation_mask =
      (flags & static_cast<uint8_t>(GradFlag::kActivationMask)) != 0;
  layer->channel_rows = (flags & static_cast<uint8_t>(GradFlag::kChannelRows)) != 0;
  if (layer->channel_rows && layer->weight_offset < 0) {
    port::Log("%s: channel rows need trainable weights", layer->name());
    return false;
  }
  const int activation = static_cast<int>(layer->activation);
  if (layer->activation_mask && !reference::HasMaskDerivative(layer->activation)) {
    port::Log("%s: an activation mask needs a clamping activation", layer->name());
    return false;
  }
  return blob_kind == static_cast<uint8_t>(kind) && activation >= 0 &&
         activation <= 4 && g.k_h >= 1 && g.k_w >= 1 && g.stride_h >= 1 &&
         g.stride_w >= 1 && g.dilation_h >= 1 && g.dilation_w >= 1 &&
         g.pad_top >= 0 && g.pad_left >= 0 && g.depth_multiplier >= 1 &&
         g.in_c >= 1 && g.out_c >= 1 && g.out_h >= 1 && g.out_w >= 1 &&
         layer->lora_rank >= 0;
}

port::Status PrepareGeometry(const port::TensorInfo& input, int output_values,
                             LinearLayer* layer) {
  reference::ConvGeometry& g = layer->geometry;
  if (layer->kind == LinearKind::kFullyConnected) {
    // Rows of in_c values; TFLite flattens any leading dimensions.
    TFLMT_ENSURE_MSG(input.FlatSize() % g.in_c == 0,
                     "%s: input is not rows of %d", layer->name(), g.in_c);
    g.batches = input.FlatSize() / g.in_c;
    g.in_h = g.in_w = 1;
  } else {
    TFLMT_ENSURE_MSG(input.rank == 4 && input.dims[3] == g.in_c,
                     "%s: input must be NHWC with %d channels", layer->name(),
                     g.in_c);
    g.batches = input.dims[0];
    g.in_h = input.dims[1];
    g.in_w = input.dims[2];
  }
  TFLMT_ENSURE_MSG(output_values == g.out_pixels() * g.out_c,
                   "%s: output holds %d values, the options say %d x %d x %d",
                   layer->name(), output_values, g.out_h, g.out_w, g.out_c);
  if (layer->depthwise()) {
    TFLMT_ENSURE_MSG(g.out_c == g.in_c * g.depth_multiplier,
                     "%s: %d channels x %d != %d", layer->name(), g.in_c, g.depth_multiplier, g.out_c);
  }
  return port::Status::kOk;
}

port::Status PrepareOutputGeometry(int output_values, LinearLayer* layer) {
  reference::ConvGeometry& g = layer->geometry;
  const int per_batch = g.out_h * g.out_w * g.out_c;
  TFLMT_ENSURE_MSG(output_values % per_batch == 0,
                   "%s: output holds %d values, not batches of %d x %d x %d",
                   layer->name(), output_values, g.out_h, g.out_w, g.out_c);
  g.batches = output_values / per_batch;
  g.in_h = g.in_w = 0;  // unused: no input-side loop runs
  return port::Status::kOk;
}

port::Status PrepareFrozenWeights(const port::TensorInfo& info,
                                  const LinearLayer& layer,
                                  reference::WeightsRef* weights) {
  const reference::ConvGeometry& g = layer.geometry;
  TFLMT_ENSURE_MSG(info.constant_data != nullptr,
                   "%s: frozen weights must be constant", layer.name());
  bool shape_ok = false;
  int channel_dimension = 0;
  switch (layer.kind) {
    case LinearKind::kFullyConnected:
      shape_ok = info.rank == 2 && info.dims[0] == g.out_c && info.dims[1] == g.in_c;
      break;
    case LinearKind::kConv2D:
      shape_ok = info.rank == 4 && info.dims[0] == g.out_c &&
                 info.dims[1] == g.k_h && info.dims[2] == g.k_w &&
                 info.dims[3] == g.in_c;
      break;
    case LinearKind::kDepthwiseConv2D:
      shape_ok = info.rank == 4 && info.dims[0] == 1 && info.dims[1] == g.k_h &&
                 info.dims[2] == g.k_w && info.dims[3] == g.out_c;
      channel_dimension = 3;
      break;
  }
  TFLMT_ENSURE_MSG(shape_ok, "%s: frozen weights have an unexpected shape",
                   layer.name());
  if (info.type == port::DataType::kFloat32) {
    weights->f32 = static_cast<const float*>(info.constant_data);
    return port::Status::kOk;
  }
  TFLMT_ENSURE_MSG(info.type == port::DataType::kInt8,
                   "%s: weights must be float32 or int8", layer.name());
  TFLMT_ENSURE_MSG(info.quant.zero_point == 0,
                   "%s: int8 weights need zero point 0", layer.name());
  weights->i8 = static_cast<const int8_t*>(info.constant_data);
  weights->scale = info.quant.scale;
  if (info.quant.num_channels > 1) {
    TFLMT_ENSURE_MSG(info.quant.num_channels == g.out_c &&
                         info.quant.quantized_dimension == channel_dimension,
                     "%s: per-channel scales must follow the output channels",
                     layer.name());
    weights->channel_scales = info.quant.channel_scales;
  }
  return port::Status::kOk;
}

port::Status PrepareChannelRows(const port::TensorInfo& info, LinearLayer* layer,
                                const int32_t** map) {
  const int channels = layer->geometry.out_c;
  TFLMT_ENSURE_MSG(info.constant_data != nullptr &&
                       info.type == port::DataType::kInt32 &&
                       info.FlatSize() == channels,
                   "%s: the channel map must be a constant int32 [%d]",
                   layer->name(), channels);
  const int32_t* rows = static_cast<const int32_t*>(info.constant_data);
  // Rows are numbered in channel order, so the map is valid exactly when the
  // chosen channels count 0, 1, 2, ... (each row once, none skipped).
  int next = 0;
  for (int c = 0; c < channels; ++c) {
    if (rows[c] < 0) {
      TFLMT_ENSURE_MSG(rows[c] == -1, "%s: channel map entry %d is %d",
                       layer->name(), c, static_cast<int>(rows[c]));
      continue;
    }
    TFLMT_ENSURE_MSG(rows[c] == next, "%s: channel map entry %d is %d, not row %d",
                     layer->name(), c, static_cast<int>(rows[c]), next);
    ++next;
  }
  TFLMT_ENSURE_MSG(next > 0, "%s: the channel map chooses no channel", layer->name());
  layer->trained_rows = next;
  *map = rows;
  return port::Status::kOk;
}

port::Status PrepareState(const port::TensorInfo& state,
                          const LinearLayer& layer) {
  TFLMT_ENSURE_MSG(state.type == port::DataType::kUInt8 && state.is_variable &&
                       state.bytes > state::kHeaderBytes,
                   "%s: state must be a uint8 variable", layer.name());
  // Parameters and their gradients fill at least half of the payload, so a
  // part that ends inside that half can be read, and its gradient written,
  // without leaving the tensor, whatever the optimizer.
  const long half = static_cast<long>(
      (state.bytes - state::kHeaderBytes) / sizeof(float) / 2);
  struct Part {
    int offset;
    long size;
  };
  const Part parts[] = {
      {layer.weight_offset, layer.trained_weight_count()},
      {layer.bias_offset, layer.geometry.out_c},
      {layer.lora_a_offset, layer.lora_a_count()},
      {layer.lora_b_offset, static_cast<long>(layer.geometry.out_c) * layer.lora_rank}};
  for (const Part& part : parts) {
    TFLMT_ENSURE_MSG(part.offset < 0 || part.offset + part.size <= half,
                     "%s: a trainable part lies outside the state (offset %d)",
                     layer.name(), part.offset);
  }
  TFLMT_ENSURE_MSG(!layer.has_lora() || (layer.lora_a_offset >= 0 &&
                                         layer.lora_b_offset >= 0),
                   "%s: LoRA needs both A and B", layer.name());
  return port::Status::kOk;
}

reference::WeightsRef CurrentWeights(const LinearLayer& layer,
                                     const reference::WeightsRef& frozen,
                                     float* params) {
  if (!layer.trainable_weights() || layer.channel_rows) return frozen;
  reference::WeightsRef trained;
  trained.f32 = params + layer.weight_offset;
  return trained;
}

}  // namespace tflmt
