// port.h over real TFLM headers: the backend for device builds (Arduino
// library, a TFLM source tree, Bazel). Uses TFLM's own helpers throughout.
#include <cstdarg>

#include "port/port.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace tflmt {
namespace port {
namespace {

// port.h mirrors these values without TFLM's headers; hold it to them here.
static_assert(static_cast<int>(Status::kOk) == kTfLiteOk &&
                  static_cast<int>(Status::kError) == kTfLiteError,
              "port::Status must match TfLiteStatus");
static_assert(static_cast<int>(DataType::kNoType) == kTfLiteNoType &&
                  static_cast<int>(DataType::kFloat32) == kTfLiteFloat32 &&
                  static_cast<int>(DataType::kInt32) == kTfLiteInt32 &&
                  static_cast<int>(DataType::kUInt8) == kTfLiteUInt8 &&
                  static_cast<int>(DataType::kInt64) == kTfLiteInt64 &&
                  static_cast<int>(DataType::kBool) == kTfLiteBool &&
                  static_cast<int>(DataType::kInt16) == kTfLiteInt16 &&
                  static_cast<int>(DataType::kInt8) == kTfLiteInt8,
              "port::DataType must match TfLiteType");

Status ToStatus(TfLiteStatus status) {
  return status == kTfLiteOk ? Status::kOk : Status::kError;
}

Status FillInfo(const TfLiteTensor* tensor, TensorInfo* info) {
  *info = TensorInfo();
  if (tensor == nullptr) {
    // AllocateTemp{Input,Output}Tensor: index out of range, or an optional
    // input the converter left out.
    MicroPrintf("tensor is missing");
    return Status::kError;
  }
  if (tensor->dims != nullptr && tensor->dims->size > kMaxRank) {
    MicroPrintf("tensor rank %d is more than %d", tensor->dims->size, kMaxRank);
    return Status::kError;
  }
  info->type = static_cast<DataType>(tensor->type);
  info->rank = tensor->dims != nullptr ? tensor->dims->size : 0;
  for (int i = 0; i < info->rank; ++i) info->dims[i] = tensor->dims->data[i];
  info->bytes = tensor->bytes;
  info->is_variable = tensor->is_variable;
  // A variable lives in the arena even if the file gives it initial bytes.
  if (tensor->allocation_type == kTfLiteMmapRo && !tensor->is_variable) {
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
  if (tensor->dims != nullptr) {
    view.rank = tensor->dims->size;
    view.dims = tensor->dims->data;
  }
  return view;
}

}  // namespace

int NumInputs(const Node* node) { return tflite::NumInputs(node); }
int NumOutputs(const Node* node) { return tflite::NumOutputs(node); }

bool HasInput(const Node* node, int index) {
  return index >= 0 && index < tflite::NumInputs(node) &&
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

// An index out of range, or an input / output left out, gives a view with no
// data (checked here rather than relying on TFLM's helpers, which do not all
// check).
TensorView Input(Context* context, const Node* node, int index) {
  if (!HasInput(node, index)) return TensorView();
  return View(tflite::micro::GetEvalInput(context, node, index));
}

TensorView Output(Context* context, const Node* node, int index) {
  if (index < 0 || index >= tflite::NumOutputs(node) ||
      node->outputs->data[index] < 0) {
    return TensorView();
  }
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
