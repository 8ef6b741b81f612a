// The training state: one uint8 variable tensor holding everything that must
// survive between invocations - trainable parameters, their accumulated
// gradients and the optimizer's slots - behind a 64-byte header. The tensor is
// both a model input and a model output, so exporting the state is reading an
// output and restoring it is writing an input, on a device or in Python.
//
//   offset  size  field
//        0     4  magic "TMTS"
//        4     2  format version (1)
//        6     2  header bytes (64)
//        8     8  base model hash (first 8 bytes of SHA-256 of the .tflite)
//       16     4  layout hash (CRC-32 of the converter's state layout)
//       20     4  payload bytes (everything after the header)
//       24     4  parameter count P (float32)
//       28     4  optimizer steps applied
//       32     4  samples accumulated toward the next step
//       36     4  CRC-32 of bytes [0, 36) followed by [40, end)
//       40     4  updates skipped because a gradient was not finite
//       44    20  reserved, zero
//       64   4*P  parameters | 4*P gradients | 4*P per optimizer slot
//
// All fields are little-endian. docs/state_format.md is the user-facing copy.
#ifndef TFLM_OPS_KERNELS_TRAINING_STATE_H_
#define TFLM_OPS_KERNELS_TRAINING_STATE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "reference/crc32.h"

namespace tflmt {
namespace state {

constexpr uint8_t kMagic[4] = {'T', 'M', 'T', 'S'};
constexpr uint16_t kFormatVersion = 1;
constexpr size_t kHeaderBytes = 64;

constexpr size_t kVersionOffset = 4;
constexpr size_t kHeaderBytesOffset = 6;
constexpr size_t kModelHashOffset = 8;
constexpr size_t kLayoutHashOffset = 16;
constexpr size_t kPayloadBytesOffset = 20;
constexpr size_t kParamCountOffset = 24;
constexpr size_t kStepOffset = 28;
constexpr size_t kAccumulatedOffset = 32;
constexpr size_t kCrcOffset = 36;
constexpr size_t kSkippedOffset = 40;

inline uint32_t LoadU32(const uint8_t* state, size_t offset) {
  uint32_t v;
  std::memcpy(&v, state + offset, 4);
  return v;
}
inline void StoreU32(uint8_t* state, size_t offset, uint32_t v) {
  std::memcpy(state + offset, &v, 4);
}

inline uint32_t ParamCount(const uint8_t* state) {
  return LoadU32(state, kParamCountOffset);
}
inline float* Params(uint8_t* state) {
  return reinterpret_cast<float*>(state + kHeaderBytes);
}
inline float* Grads(uint8_t* state) { return Params(state) + ParamCount(state); }
// Slot 0 is momentum / Adam's m, slot 1 Adam's v.
inline float* OptimizerSlot(uint8_t* state, int slot) {
  return Params(state) + (2 + slot) * ParamCount(state);
}

inline uint32_t ComputeCrc(const uint8_t* state, size_t total_bytes) {
  const uint32_t head = reference::Crc32(state, kCrcOffset);
  return reference::Crc32(state + kCrcOffset + 4,
                          total_bytes - kCrcOffset - 4, head);
}

inline void Seal(uint8_t* state, size_t total_bytes) {
  StoreU32(state, kCrcOffset, ComputeCrc(state, total_bytes));
}

}  // namespace state
}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_TRAINING_STATE_H_
