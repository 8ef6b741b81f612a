// port.h over plain arrays (see array_port.h). Used by the kernel test runner.
#include <cstdarg>
#include <cstdio>

#include "port/array/array_port.h"
#include "port/port.h"

namespace tflmt {
namespace array_port {

void* Arena::Allocate(size_t bytes) {
  const size_t start = (used + 15) & ~static_cast<size_t>(15);
  if (start > capacity || bytes > capacity - start) return nullptr;
  used = start + bytes;
  return base + start;
}

}  // namespace array_port

namespace port {
namespace {

int TensorIndex(const int32_t* list, int count, int index) {
  if (list == nullptr || index < 0 || index >= count) return -1;
  return list[index];
}

array_port::Tensor* Find(Context* context, int tensor_index) {
  if (tensor_index < 0 || tensor_index >= context->num_tensors) return nullptr;
  return &context->tensors[tensor_index];
}

Status FillInfo(Context* context, int tensor_index, TensorInfo* info) {
  const array_port::Tensor* tensor = Find(context, tensor_index);
  if (tensor == nullptr) {
    *info = TensorInfo();
    Log("tensor is missing");
    return Status::kError;
  }
  *info = tensor->info;
  return Status::kOk;
}

TensorView View(Context* context, int tensor_index) {
  TensorView view;
  array_port::Tensor* tensor = Find(context, tensor_index);
  if (tensor == nullptr) return view;
  view.data = tensor->data;
  view.dims = tensor->info.dims;
  view.rank = tensor->info.rank;
  view.type = tensor->info.type;
  return view;
}

}  // namespace

int NumInputs(const Node* node) { return node->num_inputs; }
int NumOutputs(const Node* node) { return node->num_outputs; }

bool HasInput(const Node* node, int index) {
  return TensorIndex(node->inputs, node->num_inputs, index) >= 0;
}

void* UserData(const Node* node) { return node->user_data; }

Status InputInfo(Context* context, const Node* node, int index,
                 TensorInfo* info) {
  return FillInfo(context, TensorIndex(node->inputs, node->num_inputs, index),
                  info);
}

Status OutputInfo(Context* context, const Node* node, int index,
                  TensorInfo* info) {
  return FillInfo(context,
                  TensorIndex(node->outputs, node->num_outputs, index), info);
}

TensorView Input(Context* context, const Node* node, int index) {
  return View(context, TensorIndex(node->inputs, node->num_inputs, index));
}

TensorView Output(Context* context, const Node* node, int index) {
  return View(context, TensorIndex(node->outputs, node->num_outputs, index));
}

void* AllocatePersistent(Context* context, size_t bytes) {
  return context->arena->Allocate(bytes);
}

// Every request gets its own block: no planning, which a test does not need.
Status RequestScratch(Context* context, size_t bytes, int* index) {
  if (context->num_scratch >= array_port::kMaxScratch) return Status::kError;
  void* block = context->arena->Allocate(bytes);
  if (block == nullptr) return Status::kError;
  context->scratch[context->num_scratch] = block;
  context->scratch_bytes[context->num_scratch] = bytes;
  *index = context->num_scratch++;
  return Status::kOk;
}

void* Scratch(Context* context, int index) {
  if (index < 0 || index >= context->num_scratch) return nullptr;
  return context->scratch[index];
}

void Log(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vprintf(format, args);
  va_end(args);
  std::printf("\n");
}

}  // namespace port
}  // namespace tflmt
