// The only door between tflm-train kernels and the interpreter that runs them.
//
// Kernels include this header and nothing from TFLM. Two backends implement it:
//   port/tflm/port_tflm.cc   - real TFLM headers (Arduino library, TFLM source
//                              tree, Bazel): device builds.
//   port/wheel/port_wheel.cc - the x86 interpreter inside the pinned
//                              `tflite-micro` PyPI wheel, which ships no headers.
// Everything here is plain data and free functions so that both backends stay
// small and the kernels stay device code (no heap, no exceptions, no RTTI).
#ifndef TFLM_OPS_PORT_PORT_H_
#define TFLM_OPS_PORT_PORT_H_

#include <cstddef>
#include <cstdint>

// The interpreter's own context and node types, opaque to kernels.
struct TfLiteContext;
struct TfLiteNode;

namespace tflmt {
namespace port {

using Context = ::TfLiteContext;
using Node = ::TfLiteNode;

// Same values as TfLiteStatus (kTfLiteOk / kTfLiteError), not always the
// same size: arm-none-eabi builds with -fshort-enums, where TfLiteStatus is one
// byte. Backends therefore convert (port/tflm/tflm_train_ops.h adapts each
// kernel); only the x86-64 wheel backend may store kernel functions as is.
enum class Status : int { kOk = 0, kError = 1 };

// Same numeric values as TfLiteType.
enum class DataType : int {
  kNoType = 0,
  kFloat32 = 1,
  kInt32 = 2,
  kUInt8 = 3,
  kInt64 = 4,
  kBool = 6,
  kInt16 = 7,
  kInt8 = 9,
};

constexpr int kMaxRank = 6;

// Quantization of a tensor as the converter wrote it. Per-channel scales point
// into the model flatbuffer, which outlives the interpreter.
struct Quantization {
  float scale = 0.0f;
  int32_t zero_point = 0;
  int num_channels = 0;  // 0 or 1: per-tensor.
  const float* channel_scales = nullptr;
  int quantized_dimension = 0;

  float ChannelScale(int channel) const {
    return num_channels > 1 ? channel_scales[channel] : scale;
  }
};

// What Prepare may learn about a tensor. Only `constant_data` may be kept past
// Prepare (it points into the model); everything else is copied here.
struct TensorInfo {
  DataType type = DataType::kNoType;
  int rank = 0;
  int dims[kMaxRank] = {};
  Quantization quant;
  bool is_variable = false;
  const void* constant_data = nullptr;  // null unless the tensor is a constant
  size_t bytes = 0;

  int Dim(int i) const { return dims[i]; }
  int FlatSize() const {
    int n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
};

// What Eval sees: data, shape, type. No quantization (TFLM keeps none at Eval
// time); Prepare copies what Eval needs into the op's persistent data.
struct TensorView {
  void* data = nullptr;
  const int* dims = nullptr;
  int rank = 0;
  DataType type = DataType::kNoType;

  bool present() const { return data != nullptr; }
  int FlatSize() const {
    int n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  template <typename T>
  T* As() const {
    return static_cast<T*>(data);
  }
};

// ---- Graph access -----------------------------------------------------------
int NumInputs(const Node* node);
int NumOutputs(const Node* node);
// False for an optional input the converter left out (index -1).
bool HasInput(const Node* node, int index);
void* UserData(const Node* node);

// Prepare only (TFLM hands out temporary tensors there and nowhere else).
Status InputInfo(Context* context, const Node* node, int index,
                 TensorInfo* info);
Status OutputInfo(Context* context, const Node* node, int index,
                  TensorInfo* info);

// Eval: the live tensors. A missing optional input gives a view with no data.
TensorView Input(Context* context, const Node* node, int index);
TensorView Output(Context* context, const Node* node, int index);

// ---- Arena memory -----------------------------------------------------------
// Init/Prepare only. Lives as long as the interpreter.
void* AllocatePersistent(Context* context, size_t bytes);
// Prepare asks, Eval gets. Scratch is shared between ops: valid only inside Eval.
Status RequestScratch(Context* context, size_t bytes, int* index);
void* Scratch(Context* context, int index);

// ---- Errors -----------------------------------------------------------------
// printf-style; on devices this is MicroPrintf.
void Log(const char* format, ...);

// ---- Kernel table -----------------------------------------------------------
// One per custom op. `name` must outlive the interpreter (string literals do).
struct KernelDef {
  const char* name;
  void* (*init)(Context* context, const char* options, size_t length);
  void (*free)(Context* context, void* op_data);
  Status (*prepare)(Context* context, Node* node);
  Status (*eval)(Context* context, Node* node);
  void (*reset)(Context* context, void* op_data);
};

}  // namespace port
}  // namespace tflmt

// TFLM's error split: ENSURE in Init/Prepare (logs file and line), plain
// returns for data-dependent checks in Eval, DCHECK for invariants.
#define TFLMT_ENSURE(cond)                                               \
  do {                                                                   \
    if (!(cond)) {                                                       \
      ::tflmt::port::Log("%s:%d %s was not true.", __FILE__, __LINE__,   \
                         #cond);                                         \
      return ::tflmt::port::Status::kError;                              \
    }                                                                    \
  } while (0)

#define TFLMT_ENSURE_MSG(cond, ...)         \
  do {                                      \
    if (!(cond)) {                          \
      ::tflmt::port::Log(__VA_ARGS__);      \
      return ::tflmt::port::Status::kError; \
    }                                       \
  } while (0)

#define TFLMT_ENSURE_OK(expr)                                         \
  do {                                                                \
    const ::tflmt::port::Status tflmt_status_ = (expr);               \
    if (tflmt_status_ != ::tflmt::port::Status::kOk) return tflmt_status_; \
  } while (0)

#ifdef NDEBUG
#define TFLMT_DCHECK(cond) ((void)0)
#else
#define TFLMT_DCHECK(cond)                                               \
  do {                                                                   \
    if (!(cond)) ::tflmt::port::Log("%s:%d DCHECK %s failed", __FILE__, \
                                    __LINE__, #cond);                    \
  } while (0)
#endif

#endif  // TFLM_OPS_PORT_PORT_H_
