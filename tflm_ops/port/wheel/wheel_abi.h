// Binary layouts of the TFLM interpreter inside the `tflite-micro` PyPI wheel.
//
// The wheel ships no C++ headers, so this file declares, in our own words, the
// few layouts the x86 plugin touches. They hold for exactly one wheel:
#define TFLMT_WHEEL_VERSION "0.dev20261023182759"
// (pinned in pyproject.toml; tflm_train refuses any other version at import,
// because a wrong layout would crash instead of erring). The facts come from
// shared/notes/tflm-wheel-abi.md and are re-checked by tests/test_plugin.py.
//
// Nothing outside port/wheel/ may include this file.
#ifndef TFLM_OPS_PORT_WHEEL_WHEEL_ABI_H_
#define TFLM_OPS_PORT_WHEEL_WHEEL_ABI_H_

#include <cstddef>
#include <cstdint>

#include "port/port.h"

namespace tflmt {
namespace wheel {

// {int size; int data[size];}, the shape of TfLiteIntArray / TfLiteFloatArray.
struct IntArray {
  int size;
  const int* data() const { return reinterpret_cast<const int*>(this + 1); }
};
struct FloatArray {
  int size;
  const float* data() const {
    return reinterpret_cast<const float*>(this + 1);
  }
};

// TfLiteEvalTensor.
struct EvalTensor {
  void* data;
  IntArray* dims;
  int type;
};

constexpr int kNoQuantization = 0;
constexpr int kAffineQuantization = 1;
constexpr int kAllocationMmapRo = 1;  // tensor data lives in the flatbuffer

// TfLiteAffineQuantization.
struct AffineQuantization {
  FloatArray* scale;
  IntArray* zero_point;
  int32_t quantized_dimension;
};

// The reduced TfLiteTensor that TFLM builds with TF_LITE_STATIC_MEMORY.
struct Tensor {
  int quantization_type;
  void* quantization_params;  // AffineQuantization* when affine
  float scale;
  int32_t zero_point;
  void* data;
  IntArray* dims;
  size_t bytes;
  int type;
  int allocation_type;
  bool is_variable;
};
static_assert(sizeof(Tensor) == 64, "reduced TfLiteTensor is 64 bytes");

// TfLiteNode (reduced).
struct Node {
  IntArray* inputs;
  IntArray* outputs;
  IntArray* intermediates;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
};

// tflite::MicroContext: only the leading virtual functions, in vtable order.
// Never constructed here; we call through the interpreter's own object.
class MicroContext {
 public:
  virtual ~MicroContext() = default;  // two vtable slots (Itanium ABI)
  virtual void* AllocatePersistentBuffer(size_t bytes) = 0;
  virtual int RequestScratchBufferInArena(size_t bytes, int* buffer_idx) = 0;
  virtual void* GetScratchBuffer(int buffer_idx) = 0;
  virtual Tensor* AllocateTempTfLiteTensor(int tensor_idx) = 0;
  virtual void DeallocateTempTfLiteTensor(Tensor* tensor) = 0;
  virtual uint8_t* AllocateTempBuffer(size_t size, size_t alignment) = 0;
  virtual void DeallocateTempBuffer(uint8_t* buffer) = 0;
  virtual EvalTensor* GetEvalTensor(int tensor_idx) = 0;
};

// In this version the TfLiteContext a kernel receives starts with the
// MicroContext pointer; the older function-pointer table is not usable.
inline MicroContext* GetMicroContext(port::Context* context) {
  return *reinterpret_cast<MicroContext**>(context);
}

// TFLMRegistration.
struct Registration {
  void* (*init)(port::Context*, const char*, size_t);
  void (*free)(port::Context*, void*);
  port::Status (*prepare)(port::Context*, port::Node*);
  port::Status (*invoke)(port::Context*, port::Node*);
  void (*reset)(port::Context*, void*);
  int32_t builtin_code;
  const char* custom_name;
};
static_assert(sizeof(Registration) == 56, "TFLMRegistration is 56 bytes");

constexpr int32_t kBuiltinCustom = 32;  // BuiltinOperator_CUSTOM

// PythonOpsResolver, a MicroMutableOpResolver<200>: vtable pointer, then the
// registrations, then their count. Its AddCustom is inline and not exported.
constexpr int kResolverCapacity = 200;
struct OpResolver {
  void* vtable;
  Registration registrations[kResolverCapacity];
  uint32_t registrations_len;
};
static_assert(offsetof(OpResolver, registrations) == 8, "resolver layout");
static_assert(offsetof(OpResolver, registrations_len) == 11208,
              "resolver layout");

}  // namespace wheel
}  // namespace tflmt

#endif  // TFLM_OPS_PORT_WHEEL_WHEEL_ABI_H_
