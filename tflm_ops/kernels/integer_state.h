// The payload of an integer training state (--arithmetic int8): the same
// 64-byte header as every state (kernels/training_state.h; its flags have
// kFlagInteger set), then
//   P int16 parameters, padded to a multiple of 4 bytes | P int32 gradient
//   accumulators [| P int32 velocities: integer SGD with momentum]
// where P is the header's parameter count. Integer ops index all by the
// parameter's position (a tensor's offset counts int16 values).
#ifndef TFLM_OPS_KERNELS_INTEGER_STATE_H_
#define TFLM_OPS_KERNELS_INTEGER_STATE_H_

#include <cstddef>
#include <cstdint>

#include "kernels/training_state.h"

namespace tflmt {
namespace integer_state {

inline size_t ParamBytes(uint32_t params) { return (2 * size_t{params} + 3) & ~size_t{3}; }
// `slots`: int32 optimizer values per parameter (1 with momentum).
inline size_t PayloadBytes(uint32_t params, int slots = 0) {
  return ParamBytes(params) + 4 * size_t{params} * (1 + static_cast<size_t>(slots));
}

inline int16_t* Params(uint8_t* s) {
  return reinterpret_cast<int16_t*>(s + state::kHeaderBytes);
}
inline int32_t* Grads(uint8_t* s) {
  return reinterpret_cast<int32_t*>(s + state::kHeaderBytes +
                                    ParamBytes(state::ParamCount(s)));
}

// The velocities (momentum), after the accumulators.
inline int32_t* Velocities(uint8_t* s) { return Grads(s) + state::ParamCount(s); }

}  // namespace integer_state
}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_INTEGER_STATE_H_
