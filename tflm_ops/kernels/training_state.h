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
//       40     4  updates skipped (the update would not have been finite)
//       44     4  flags; bit 0 LIVE (see below), bit 1 INTEGER (an integer
//                  training state: kernels/integer_state.h), other bits zero
//       48     4  samples skipped (non-finite or out-of-range values)
//       52     4  episodes rejected (held-out check worse: not committed)
//       56     4  rollbacks (episodes stopped by divergence, rolled back)
//       60     4  reserved, zero
//       64   4*P  parameters | 4*P gradients | 4*P per optimizer slot
//
// All fields are little-endian. docs/state_format.md is the user-facing copy.
//
// Integrity is checked where the state crosses a boundary, not in every step.
// LIVE clear: the state came from outside this interpreter (the model's
// initial state, or one written into the tensor: restored, imported). The
// TFLMT_STATE op verifies all of it - header, CRC, every parameter and slot
// finite - and then sets LIVE. LIVE set: only our kernels have written it
// since, so the payload is trusted and the CRC field is stale. Exporting is
// a copy with LIVE cleared and the CRC recomputed (`Export` below); importing
// clears LIVE so the next invocation verifies. Files written before the
// flags existed have zero there: "not live", verified on import.
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
constexpr size_t kSkippedOffset = 40;  // skipped updates
constexpr size_t kFlagsOffset = 44;
constexpr size_t kSkippedSamplesOffset = 48;
// Lifetime counters of the episode loop (device/episode.h). The adapter is
// restored from the committed copy after a rejected or diverged episode; these
// and the two "skipped" counters are carried over into it, so they count over
// the device's life, not the adapter's.
constexpr size_t kRejectedEpisodesOffset = 52;
constexpr size_t kRollbacksOffset = 56;

constexpr uint32_t kFlagLive = 1u << 0;
// Set by the converter in an integer state (--arithmetic int8): int16
// parameters and int32 accumulators, no float value to check for finiteness.
constexpr uint32_t kFlagInteger = 1u << 1;

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

inline void Increment(uint8_t* state, size_t offset) {
  StoreU32(state, offset, LoadU32(state, offset) + 1);
}

inline bool IsLive(const uint8_t* state) {
  return (LoadU32(state, kFlagsOffset) & kFlagLive) != 0;
}
inline void SetLive(uint8_t* state, bool live) {
  const uint32_t flags = LoadU32(state, kFlagsOffset);
  StoreU32(state, kFlagsOffset, live ? (flags | kFlagLive) : (flags & ~kFlagLive));
}

// A state as it leaves the interpreter: LIVE cleared, CRC valid. `state` is
// the copy being exported (never the live tensor, which stays LIVE).
inline void Export(uint8_t* state, size_t total_bytes) {
  SetLive(state, false);
  Seal(state, total_bytes);
}
// A state as it enters: the next invocation verifies it.
inline void Import(uint8_t* state) { SetLive(state, false); }

// True when every float32 value is finite (no NaN, no infinity). Works on
// the bits, without a branch per value (it vectorizes), holds under
// -ffast-math too, and reads unaligned storage safely.
inline bool AllFinite(const uint8_t* values, size_t count) {
  uint32_t bad = 0;
  for (size_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, values + 4 * i, 4);
    bad |= (bits & 0x7F800000u) == 0x7F800000u ? 1u : 0u;
  }
  return bad == 0;
}

}  // namespace state
}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_TRAINING_STATE_H_
