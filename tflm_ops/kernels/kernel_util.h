// Helpers every tflm-train kernel uses:
//  - Init: parse the options blob into the op's data in the arena (InitOpData);
//  - Prepare: checks that name the op and the tensor (a malformed model gets
//    one clear line, never a crash in Eval);
//  - the quantization of an activation (copied in Prepare, used in Eval) and
//    float views of quantized tensors.
#ifndef TFLM_OPS_KERNELS_KERNEL_UTIL_H_
#define TFLM_OPS_KERNELS_KERNEL_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <new>

#include "kernels/options.h"
#include "port/port.h"
#include "reference/types.h"

namespace tflmt {

// ---- Init ---------------------------------------------------------------------
// The body every Init shares: check the options version, let `parse` read the
// rest of the blob into an OpData (false after logging: malformed), check
// that nothing is left over, and copy the result into persistent arena
// memory. Returns null (after logging) on any failure; Prepare then refuses.
//   parse: bool(OptionsReader& reader, OpData* data)
template <typename OpData, typename Parse>
void* InitOpData(port::Context* context, const char* options, size_t length,
                 const char* op_name, uint8_t version, Parse parse) {
  OptionsReader reader(options, length);
  if (!reader.ReadVersion(version)) {
    port::Log("%s: options version is not %d", op_name, version);
    return nullptr;
  }
  OpData parsed;
  if (!parse(reader, &parsed) || !reader.Finished()) {
    port::Log("%s: malformed options", op_name);
    return nullptr;
  }
  void* memory = port::AllocatePersistent(context, sizeof(OpData));
  if (memory == nullptr) {
    port::Log("%s: no arena left for the op's data", op_name);
    return nullptr;
  }
  return new (memory) OpData(parsed);
}

// For ops whose options are the version byte alone.
template <typename OpData>
void* InitOpData(port::Context* context, const char* options, size_t length,
                 const char* op_name, uint8_t version) {
  return InitOpData<OpData>(context, options, length, op_name, version,
                            [](OptionsReader&, OpData*) { return true; });
}

// Reads the six int32 dims of a shape-only op's options (reference::Dims):
// `rank` of them >= 1, the rest set to 1. False when malformed.
bool ReadDims(OptionsReader& reader, int rank, reference::Dims* dims);

// ---- Prepare checks ---------------------------------------------------------------
// Each logs "<op>: <what> ..." and returns kError when the check fails.

// The op's data from Init (null when Init refused the options).
port::Status CheckOpData(const void* data, const char* op_name);

// The node has inputs in [min_inputs, max_inputs] and outputs in
// [min_outputs, max_outputs].
port::Status CheckArity(const port::Node* node, const char* op_name,
                        int min_inputs, int max_inputs, int min_outputs,
                        int max_outputs);

// Input / output `index` exists (in range, not left out) and can be read;
// `role` names it in messages ("dy", "state", ...).
port::Status RequireInput(port::Context* context, const port::Node* node,
                          int index, const char* op_name, const char* role,
                          port::TensorInfo* info);
port::Status RequireOutput(port::Context* context, const port::Node* node,
                           int index, const char* op_name, const char* role,
                           port::TensorInfo* info);

// The tensor has `type` (and, when values >= 0, that many values).
port::Status CheckTensor(const port::TensorInfo& info, const char* op_name,
                         const char* role, port::DataType type, int values);

// A float32 input / output of `values` values (any shape).
port::Status RequireFloatInput(port::Context* context, const port::Node* node,
                               int index, const char* op_name, const char* role,
                               int values, port::TensorInfo* info = nullptr);
port::Status RequireFloatOutput(port::Context* context, const port::Node* node,
                                int index, const char* op_name,
                                const char* role, int values,
                                port::TensorInfo* info = nullptr);

// The `mode` input every backward op reads in Eval: present, int32, with a
// value to read.
port::Status CheckModeInput(port::Context* context, const port::Node* node,
                            int index, const char* op_name);

// ---- Activations -----------------------------------------------------------------
// How to turn an activation tensor's values into real numbers.
struct ActivationQuant {
  port::DataType type = port::DataType::kFloat32;
  float scale = 1.0f;
  int32_t zero_point = 0;

  bool is_float() const { return type == port::DataType::kFloat32; }
  float Dequantize(int32_t q) const { return scale * (q - zero_point); }
};

// float32, int8 or int16 activations; anything else is refused in Prepare.
port::Status ActivationQuantOf(const port::TensorInfo& info,
                               ActivationQuant* quant);
// The same, naming the op and the tensor when it refuses.
port::Status ActivationQuantOf(const port::TensorInfo& info,
                               const char* op_name, const char* role,
                               ActivationQuant* quant);

// The tensors every loss op (TFLMT_LOSS, TFLMT_DISTILL_LOSS) checks alike in
// Prepare: inputs 0 prediction (float32 / int8 / int16, last dimension = the
// values per sample), 1 target (checked by the op), 2 mode (int32 [1]);
// outputs 0 loss (float32 [1]) and 1 its gradient (float32, shaped like the
// prediction).
struct LossTensors {
  port::TensorInfo prediction;
  port::TensorInfo target;
  int values = 0;   // per sample: the prediction's last dimension
  int batches = 0;  // samples
};
port::Status PrepareLossTensors(port::Context* context, port::Node* node,
                                const char* op_name, ActivationQuant* quant,
                                LossTensors* tensors);

// The tensor's real values, read in place (int8 / int16 dequantized per
// element): no float copy in the arena.
reference::ValuesRef ValuesOf(const port::TensorView& view,
                              const ActivationQuant& quant);

// Writes real values into a float32 or quantized (int8/int16) output, at
// elements first .. first + count - 1.
void StoreValues(const float* values, int count, const ActivationQuant& quant,
                 const port::TensorView& output, int first = 0);

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_KERNEL_UTIL_H_
