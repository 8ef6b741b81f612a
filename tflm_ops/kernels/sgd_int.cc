// TFLMT_SGD_INT: the update of integer training (--arithmetic int8), last op
// of a converted model. Quantized SGD on the state's int16 parameters from
// its int32 gradient accumulators (kernels/integer_state.h), with stochastic
// rounding (a stateless integer hash of seed, step and parameter index:
// deterministic, and the same on every target) or round-to-nearest. The
// learning rate is the model's float32 input, read as bits into Q24. With
// momentum (options version 2) the state also holds an int32 velocity per
// parameter (2^-16 steps) and the update is Keras' v = m v - lr g; p += v.
// Integers only (reference/lora_int.h).
//
// Mode train: one update per sample, accumulators cleared, step counted.
// Mode skip: the sample is counted as skipped. Other modes: nothing.
// Inputs:  0 state, 1 mode, 2 learning rate (float32 [1])
// Outputs: none
// Options: rounding (0 nearest, 1 stochastic), seed; version 2: momentum Q16
#include <cstring>

#include "kernels/integer_state.h"
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "reference/lora_int.h"

namespace tflmt {
namespace {

constexpr int kState = 0;
constexpr int kMode = 1;
constexpr int kLearningRate = 2;

struct OpData {
  bool stochastic = true;
  uint32_t seed = 0;
  bool momentum = false;  // a velocity slot in the state
  int32_t momentum_q16 = 0;
  size_t state_bytes = 0;
};

void* Init(port::Context* context, const char* options, size_t length) {
  // Version 2 appends the momentum to version 1's fields.
  const bool momentum = options != nullptr && length > 0 &&
                        static_cast<uint8_t>(options[0]) == kSgdIntMomentumVersion;
  return InitOpData<OpData>(
      context, options, length, kSgdIntOpName,
      momentum ? kSgdIntMomentumVersion : kSgdIntOptionsVersion,
      [momentum](OptionsReader& r, OpData* d) {
        const int32_t rounding = r.I32();
        d->seed = static_cast<uint32_t>(r.I32());
        d->stochastic = rounding == 1;
        d->momentum = momentum;
        if (momentum) d->momentum_q16 = r.I32();
        // m < 1: the velocity's int64 product stays below 2^47.
        return (rounding == 0 || rounding == 1) && d->momentum_q16 >= 0 &&
               d->momentum_q16 < (1 << reference::kMomentumBits);
      });
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kSgdIntOpName;
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 3, 3, 0, 0));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  port::TensorInfo info;
  TFLMT_ENSURE_OK(RequireInput(context, node, kState, op, "state", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "state", port::DataType::kUInt8, -1));
  TFLMT_ENSURE_MSG(info.bytes > state::kHeaderBytes, "%s: state has no payload", op);
  data->state_bytes = info.bytes;
  TFLMT_ENSURE_OK(RequireInput(context, node, kLearningRate, op, "learning rate", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "learning rate", port::DataType::kFloat32, 1));
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  const Mode mode = ReadMode(port::Input(context, node, kMode));
  if (mode != Mode::kTrain && mode != Mode::kSkip) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  uint8_t* s = port::Input(context, node, kState).As<uint8_t>();
  if (mode == Mode::kSkip) {
    state::Increment(s, state::kSkippedSamplesOffset);
    return port::Status::kOk;
  }
  const uint32_t params = state::ParamCount(s);
  if (state::kHeaderBytes + integer_state::PayloadBytes(params, data.momentum ? 1 : 0) >
      data.state_bytes) {
    port::Log("%s: state too small for its parameters", kSgdIntOpName);
    return port::Status::kError;
  }
  uint32_t lr_bits;
  std::memcpy(&lr_bits, port::Input(context, node, kLearningRate).data, 4);
  const int32_t lr_q24 = reference::Q24FromFloatBits(lr_bits);
  if (lr_q24 < 0) {
    port::Log("%s: learning rate must be a finite value >= 0", kSgdIntOpName);
    return port::Status::kError;
  }
  const uint32_t step = state::LoadU32(s, state::kStepOffset) + 1;
  if (data.momentum) {
    reference::SgdMomentumIntUpdate(integer_state::Params(s), integer_state::Grads(s),
                                    integer_state::Velocities(s), static_cast<int>(params),
                                    lr_q24, data.momentum_q16, data.stochastic, data.seed, step);
  } else {
    reference::SgdIntUpdate(integer_state::Params(s), integer_state::Grads(s),
                            static_cast<int>(params), lr_q24, data.stochastic, data.seed, step);
  }
  state::StoreU32(s, state::kStepOffset, step);
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kSgdIntKernel = {kSgdIntOpName, Init, nullptr, Prepare, Eval, nullptr};

}  // namespace tflmt
