// port.h over the pinned tflite-micro wheel (x86-64 host plugin), plus the
// C symbols that tflm_train loads: the op registerer the wheel's Python
// interpreter looks up by name, and a last-error buffer so Python can raise
// the kernel's own message instead of a bare "invocation failed".
//
// Host-only code: the last-error buffer and the op profiler's counters are
// the only mutable globals in the project, kept here and not in kernels.
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>

#include "kernels/kernels.h"
#include "port/port.h"
#include "port/wheel/wheel_abi.h"

namespace tflmt {
namespace port {
namespace {

wheel::Node* AsNode(const Node* node) {
  return reinterpret_cast<wheel::Node*>(const_cast<Node*>(node));
}

int TensorIndex(const wheel::IntArray* list, int index) {
  if (list == nullptr || index < 0 || index >= list->size) return -1;
  return list->data()[index];
}

void CopyShape(const wheel::IntArray* dims, TensorInfo* info) {
  info->rank = dims != nullptr ? dims->size : 0;
  if (info->rank > kMaxRank) info->rank = kMaxRank;
  for (int i = 0; i < info->rank; ++i) info->dims[i] = dims->data()[i];
}

Status FillInfo(Context* context, int tensor_index, TensorInfo* info) {
  *info = TensorInfo();
  if (tensor_index < 0) {
    Log("tensor is missing");
    return Status::kError;
  }
  wheel::MicroContext* micro = wheel::GetMicroContext(context);
  wheel::Tensor* tensor = micro->AllocateTempTfLiteTensor(tensor_index);
  if (tensor == nullptr) {
    Log("tensor %d could not be read", tensor_index);
    return Status::kError;
  }
  info->type = static_cast<DataType>(tensor->type);
  CopyShape(tensor->dims, info);
  // Read the rank before releasing the temporary tensor: its dims live in
  // memory the release hands back.
  const int rank = tensor->dims != nullptr ? tensor->dims->size : 0;
  if (rank > kMaxRank) {
    micro->DeallocateTempTfLiteTensor(tensor);
    *info = TensorInfo();
    Log("tensor %d has rank %d, more than %d", tensor_index, rank, kMaxRank);
    return Status::kError;
  }
  info->bytes = tensor->bytes;
  info->is_variable = tensor->is_variable;
  // A variable lives in the arena even if the file gives it initial bytes.
  if (tensor->allocation_type == wheel::kAllocationMmapRo && !tensor->is_variable) {
    info->constant_data = tensor->data;
  }
  info->quant.scale = tensor->scale;
  info->quant.zero_point = tensor->zero_point;
  if (tensor->quantization_type == wheel::kAffineQuantization &&
      tensor->quantization_params != nullptr) {
    const auto* affine =
        static_cast<const wheel::AffineQuantization*>(tensor->quantization_params);
    if (affine->scale != nullptr && affine->scale->size > 1) {
      // Per-channel scales point into the flatbuffer (little-endian hosts),
      // so they stay valid after the temporary tensor is released.
      info->quant.num_channels = affine->scale->size;
      info->quant.channel_scales = affine->scale->data();
      info->quant.quantized_dimension = affine->quantized_dimension;
    }
  }
  micro->DeallocateTempTfLiteTensor(tensor);
  return Status::kOk;
}

TensorView View(Context* context, int tensor_index) {
  TensorView view;
  if (tensor_index < 0) return view;
  wheel::EvalTensor* tensor =
      wheel::GetMicroContext(context)->GetEvalTensor(tensor_index);
  if (tensor == nullptr) return view;
  view.data = tensor->data;
  view.type = static_cast<DataType>(tensor->type);
  if (tensor->dims != nullptr) {
    view.rank = tensor->dims->size;
    view.dims = tensor->dims->data();
  }
  return view;
}

// Messages since Python last cleared them, newest last.
constexpr size_t kErrorCapacity = 2048;
thread_local char g_errors[kErrorCapacity];
thread_local size_t g_errors_length = 0;

}  // namespace

int NumInputs(const Node* node) {
  const wheel::IntArray* inputs = AsNode(node)->inputs;
  return inputs != nullptr ? inputs->size : 0;
}

int NumOutputs(const Node* node) {
  const wheel::IntArray* outputs = AsNode(node)->outputs;
  return outputs != nullptr ? outputs->size : 0;
}

bool HasInput(const Node* node, int index) {
  return TensorIndex(AsNode(node)->inputs, index) >= 0;
}

void* UserData(const Node* node) { return AsNode(node)->user_data; }

Status InputInfo(Context* context, const Node* node, int index,
                 TensorInfo* info) {
  return FillInfo(context, TensorIndex(AsNode(node)->inputs, index), info);
}

Status OutputInfo(Context* context, const Node* node, int index,
                  TensorInfo* info) {
  return FillInfo(context, TensorIndex(AsNode(node)->outputs, index), info);
}

// An index out of range, or an input left out, gives a view with no data.
TensorView Input(Context* context, const Node* node, int index) {
  return View(context, TensorIndex(AsNode(node)->inputs, index));
}

TensorView Output(Context* context, const Node* node, int index) {
  return View(context, TensorIndex(AsNode(node)->outputs, index));
}

void* AllocatePersistent(Context* context, size_t bytes) {
  return wheel::GetMicroContext(context)->AllocatePersistentBuffer(bytes);
}

Status RequestScratch(Context* context, size_t bytes, int* index) {
  return wheel::GetMicroContext(context)->RequestScratchBufferInArena(
             bytes, index) == 0
             ? Status::kOk
             : Status::kError;
}

void* Scratch(Context* context, int index) {
  return wheel::GetMicroContext(context)->GetScratchBuffer(index);
}

void Log(const char* format, ...) {
  if (g_errors_length + 2 >= kErrorCapacity) return;
  if (g_errors_length > 0) g_errors[g_errors_length++] = '\n';
  va_list args;
  va_start(args, format);
  const int written = std::vsnprintf(g_errors + g_errors_length,
                                     kErrorCapacity - g_errors_length, format,
                                     args);
  va_end(args);
  if (written > 0) {
    g_errors_length += static_cast<size_t>(written);
    if (g_errors_length >= kErrorCapacity) g_errors_length = kErrorCapacity - 1;
  }
}

}  // namespace port

namespace {

bool AddKernel(wheel::OpResolver* resolver, const port::KernelDef* kernel) {
  for (uint32_t i = 0; i < resolver->registrations_len; ++i) {
    const wheel::Registration& existing = resolver->registrations[i];
    if (existing.builtin_code == wheel::kBuiltinCustom &&
        existing.custom_name != nullptr &&
        std::strcmp(existing.custom_name, kernel->name) == 0) {
      return true;  // already registered in this resolver
    }
  }
  if (resolver->registrations_len >= wheel::kResolverCapacity) {
    port::Log("op resolver is full; cannot add %s", kernel->name);
    return false;
  }
  wheel::Registration& entry =
      resolver->registrations[resolver->registrations_len];
  entry.init = kernel->init;
  entry.free = kernel->free;
  entry.prepare = kernel->prepare;
  entry.invoke = kernel->eval;
  entry.reset = kernel->reset;
  entry.builtin_code = wheel::kBuiltinCustom;
  entry.custom_name = kernel->name;
  resolver->registrations_len += 1;
  return true;
}

template <const port::KernelDef*... Kernels>
bool AddAll(wheel::OpResolver* resolver, KernelList<Kernels...>) {
  const port::KernelDef* kernels[] = {Kernels...};
  for (const port::KernelDef* kernel : kernels) {
    if (!AddKernel(resolver, kernel)) return false;
  }
  return true;
}

template <const port::KernelDef*... Kernels>
const char* KernelName(int index, KernelList<Kernels...>) {
  const port::KernelDef* kernels[] = {Kernels...};
  return index >= 0 && index < static_cast<int>(sizeof...(Kernels))
             ? kernels[index]->name
             : nullptr;
}

// ---- op profiler (benchmarks only; host only) -------------------------------
// When switched on (tflmt_profile_enable) BEFORE an interpreter is built, the
// registerer points every registration of that resolver - TFLM's builtin
// kernels and ours - at a wrapper that times the original invoke with
// steady_clock and adds the time to that registration slot's counter. The
// original kernels run unchanged; interpreters built while it is off are not
// touched at all. The benchmark reads the counters to split a step into
// forward, backward, optimizer and state bookkeeping.
using InvokeFn = port::Status (*)(port::Context*, port::Node*);
bool g_profile_on = false;
InvokeFn g_profile_original[wheel::kResolverCapacity] = {};
const char* g_profile_custom_name[wheel::kResolverCapacity] = {};
int32_t g_profile_builtin[wheel::kResolverCapacity] = {};
uint64_t g_profile_ns[wheel::kResolverCapacity] = {};
uint64_t g_profile_calls[wheel::kResolverCapacity] = {};

template <int kSlot>
port::Status TimedInvoke(port::Context* context, port::Node* node) {
  const auto start = std::chrono::steady_clock::now();
  const port::Status status = g_profile_original[kSlot](context, node);
  const auto stop = std::chrono::steady_clock::now();
  g_profile_ns[kSlot] += static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(stop - start).count());
  g_profile_calls[kSlot] += 1;
  return status;
}

template <size_t... kSlots>
constexpr InvokeFn WrapperOf(int slot, std::index_sequence<kSlots...>) {
  constexpr InvokeFn wrappers[] = {&TimedInvoke<static_cast<int>(kSlots)>...};
  return wrappers[slot];
}

void WrapForProfiling(wheel::OpResolver* resolver) {
  const auto slots = std::make_index_sequence<wheel::kResolverCapacity>{};
  for (uint32_t i = 0; i < resolver->registrations_len; ++i) {
    wheel::Registration& entry = resolver->registrations[i];
    const InvokeFn wrapper = WrapperOf(static_cast<int>(i), slots);
    if (entry.invoke == nullptr || entry.invoke == wrapper) continue;
    // Resolvers are built in the same order, so a slot holds the same kernel
    // in each; a slot already bound to another kernel is left untimed.
    if (g_profile_original[i] != nullptr && g_profile_original[i] != entry.invoke)
      continue;
    g_profile_original[i] = entry.invoke;
    g_profile_custom_name[i] =
        entry.builtin_code == wheel::kBuiltinCustom ? entry.custom_name : nullptr;
    g_profile_builtin[i] = entry.builtin_code;
    entry.invoke = wrapper;
  }
}

}  // namespace
}  // namespace tflmt

extern "C" {

// The registerer name tflm_train passes as custom_op_registerers.
__attribute__((visibility("default"))) bool TflmTrainRegisterOps(
    void* resolver) {
  auto* ops = static_cast<tflmt::wheel::OpResolver*>(resolver);
  if (!tflmt::AddAll(ops, tflmt::AllKernels{})) return false;
  if (tflmt::g_profile_on) tflmt::WrapForProfiling(ops);
  return true;
}

// The op profiler (see WrapForProfiling): on/off for interpreters built from
// now on, counters zeroed, and per registration slot: its builtin code, its
// custom name (null for a builtin), total nanoseconds and calls.
__attribute__((visibility("default"))) void tflmt_profile_enable(int on) {
  tflmt::g_profile_on = on != 0;
}
__attribute__((visibility("default"))) void tflmt_profile_clear(void) {
  for (int i = 0; i < tflmt::wheel::kResolverCapacity; ++i) {
    tflmt::g_profile_ns[i] = 0;
    tflmt::g_profile_calls[i] = 0;
  }
}
__attribute__((visibility("default"))) int tflmt_profile_slots(void) {
  return tflmt::wheel::kResolverCapacity;
}
__attribute__((visibility("default"))) int tflmt_profile_builtin(int slot) {
  return slot >= 0 && slot < tflmt::wheel::kResolverCapacity
             ? tflmt::g_profile_builtin[slot] : -1;
}
__attribute__((visibility("default"))) const char* tflmt_profile_custom_name(
    int slot) {
  return slot >= 0 && slot < tflmt::wheel::kResolverCapacity
             ? tflmt::g_profile_custom_name[slot] : nullptr;
}
__attribute__((visibility("default"))) unsigned long long tflmt_profile_ns(
    int slot) {
  return slot >= 0 && slot < tflmt::wheel::kResolverCapacity
             ? tflmt::g_profile_ns[slot] : 0;
}
// Copies the first `count` slots' nanosecond totals into `out` (one call per
// step, so a step's split can be read without a call per slot).
__attribute__((visibility("default"))) void tflmt_profile_read(
    unsigned long long* out, int count) {
  for (int i = 0; i < count && i < tflmt::wheel::kResolverCapacity; ++i)
    out[i] = tflmt::g_profile_ns[i];
}
__attribute__((visibility("default"))) unsigned long long tflmt_profile_calls(
    int slot) {
  return slot >= 0 && slot < tflmt::wheel::kResolverCapacity
             ? tflmt::g_profile_calls[slot] : 0;
}

__attribute__((visibility("default"))) const char* tflmt_wheel_version(void) {
  return TFLMT_WHEEL_VERSION;
}

__attribute__((visibility("default"))) int tflmt_op_count(void) {
  return tflmt::AllKernels::kCount;
}

__attribute__((visibility("default"))) const char* tflmt_op_name(int index) {
  return tflmt::KernelName(index, tflmt::AllKernels{});
}

__attribute__((visibility("default"))) const char* tflmt_last_errors(void) {
  tflmt::port::g_errors[tflmt::port::g_errors_length] = '\0';
  return tflmt::port::g_errors;
}

__attribute__((visibility("default"))) void tflmt_clear_errors(void) {
  tflmt::port::g_errors_length = 0;
  tflmt::port::g_errors[0] = '\0';
}

}  // extern "C"
