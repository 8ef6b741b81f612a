// port.h over real TFLM headers: the backend for device builds (Arduino
// library, a TFLM source tree, Bazel). Uses TFLM's own helpers throughout.
#include <cstdarg>

#include "port/port.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace tflmt {
namespace port {
namespace {

Status ToStatus(TfLiteStatus status) {
  return status == kTfLiteOk ? Status::kOk : Status::kError;
}

Status FillInfo(const TfLiteTensor* tensor, TensorInfo* info) {
  *info = TensorInfo();
  if (tensor == nullptr) return Status::kError;
  if (tensor->dims != nullptr && tensor->dims->size > kMaxRank) {
    MicroPrintf("tensor rank %d is more than %d", tensor->dims->size, kMaxRank);
    return Status::kError;
  }
  info->type = static_cast<DataType>(tensor->type);
  info->rank = tensor->dims != nullptr ? tensor->dims->size : 0;
  for (int i = 0; i < info->rank; ++i) info->dims[i] = tensor->dims->data[i];
  info->bytes = tensor->bytes;
  info->is_variable = tensor->is_variable;
  if (tensor->allocation_type == kTfLiteMmapRo) {
    info->constant_data = tensor->data.data;
  }
  info->quant.scale = tensor->params.scale;
  info->quant.zero_point = tensor->params.zero_point;
  if (tensor->quantization.type == kTfLiteAffineQuantization &&
      tensor->quantization.params != nullptr) {
    const auto* affine = static_cast<const TfLiteAffineQuantization*>(
        tensor->quantization.params);
    if (affine->scale != nullptr && affine->scale->size > 1) {
      // On little-endian targets TFLM points these into the flatbuffer.
      info->quant.num_channels = affine->scale->size;
      info->quant.channel_scales = affine->scale->data;
      info->quant.quantized_dimension = affine->quantized_dimension;
    }
  }
  return Status::kOk;
}

TensorView View(const TfLiteEvalTensor* tensor) {
  TensorView view;
  if (tensor == nullptr) return view;
  view.data = tensor->data.data;
  view.type = static_cast<DataType>(tensor->type);
  view.rank = tensor->dims->size;
  view.dims = tensor->dims->data;
  return view;
}

}  // namespace

int NumInputs(const Node* node) { return tflite::NumInputs(node); }
int NumOutputs(const Node* node) { return tflite::NumOutputs(node); }

bool HasInput(const Node* node, int index) {
  return index < node->inputs->size &&
         node->inputs->data[index] != kTfLiteOptionalTensor;
}

void* UserData(const Node* node) { return node->user_data; }

Status InputInfo(Context* context, const Node* node, int index,
                 TensorInfo* info) {
  tflite::MicroContext* micro = tflite::GetMicroContext(context);
  TfLiteTensor* tensor = micro->AllocateTempInputTensor(node, index);
  const Status status = FillInfo(tensor, info);
  if (tensor != nullptr) micro->DeallocateTempTfLiteTensor(tensor);
  return status;
}

Status OutputInfo(Context* context, const Node* node, int index,
                  TensorInfo* info) {
  tflite::MicroContext* micro = tflite::GetMicroContext(context);
  TfLiteTensor* tensor = micro->AllocateTempOutputTensor(node, index);
  const Status status = FillInfo(tensor, info);
  if (tensor != nullptr) micro->DeallocateTempTfLiteTensor(tensor);
  return status;
}

TensorView Input(Context* context, const Node* node, int index) {
  return View(tflite::micro::GetEvalInput(context, node, index));
}

TensorView Output(Context* context, const Node* node, int index) {
  return View(tflite::micro::GetEvalOutput(context, node, index));
}

void* AllocatePersistent(Context* context, size_t bytes) {
  return tflite::GetMicroContext(context)->AllocatePersistentBuffer(bytes);
}

Status RequestScratch(Context* context, size_t bytes, int* index) {
  return ToStatus(tflite::GetMicroContext(context)->RequestScratchBufferInArena(
      bytes, index));
}

void* Scratch(Context* context, int index) {
  return tflite::GetMicroContext(context)->GetScratchBuffer(index);
}

void Log(const char* format, ...) {
  va_list args;
  va_start(args, format);
  VMicroPrintf(format, args);
  va_end(args);
}

}  // namespace port
}  // namespace tflmt
