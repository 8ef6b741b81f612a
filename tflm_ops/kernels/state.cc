// TFLMT_STATE: first operator of a converted model; guards the training state
// and the sample.
//
// The state tensor is a variable: TFLM zeroes it when the interpreter is
// created and on Reset(). An all-zero header therefore means "fresh", and this
// op copies the model's initial state (header and initial parameters, from
// flash) into it - so Reset() rolls the adapter back to its initial values.
//
// Integrity is checked at the state's boundaries (kernels/training_state.h):
// a state whose LIVE flag is clear (fresh, restored or imported) is verified
// in full - it must belong to this model and this state layout, its checksum
// must hold and every parameter and optimizer slot must be finite - and then
// marked LIVE. A LIVE state was written only by our kernels since: just its
// header is compared (a few bytes), the payload is not scanned again.
//
// In "train" mode a sample whose float32 data inputs hold a NaN or an
// infinity is not trained on: this op rewrites the mode tensor to SKIP, which
// every later op reads, so the forward pass runs as inference, no gradient is
// made and the optimizer counts the sample as skipped.
//
// Inputs:  0 state (uint8 variable), 1 initial state (uint8 constant),
//          2 mode (int32 [1], optional), 3.. the model's float32 data inputs
//          (optional; models converted before the guard have inputs 0-1 only)
// Outputs: none
#include <cstring>
#include <new>

#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/options.h"
#include "kernels/training_state.h"

namespace tflmt {
namespace {

constexpr int kState = 0;
constexpr int kInitial = 1;

constexpr int kMode = 2;
constexpr int kFirstSample = 3;

struct OpData {
  const uint8_t* initial = nullptr;  // in the model (flash)
  size_t initial_bytes = 0;
  size_t state_bytes = 0;
  bool has_mode = false;
  bool integer = false;  // kFlagInteger: no float values in the payload
};

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(context, options, length, kStateOpName,
                            kStateOptionsVersion);
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_STATE: bad options");
  const int inputs = port::NumInputs(node);
  TFLMT_ENSURE_MSG(inputs >= 2 && port::NumOutputs(node) == 0,
                   "TFLMT_STATE: takes a state and its initial value");
  port::TensorInfo state, initial;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kState, &state));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kInitial, &initial));
  TFLMT_ENSURE_MSG(state.type == port::DataType::kUInt8 && state.is_variable &&
                       state.bytes > state::kHeaderBytes,
                   "TFLMT_STATE: state must be a uint8 variable tensor");
  TFLMT_ENSURE_MSG(initial.type == port::DataType::kUInt8 &&
                       initial.constant_data != nullptr,
                   "TFLMT_STATE: initial state must be a uint8 constant");
  const uint8_t* init = static_cast<const uint8_t*>(initial.constant_data);
  const bool integer = initial.bytes >= state::kHeaderBytes &&
                       (state::LoadU32(init, state::kFlagsOffset) & state::kFlagInteger) != 0;
  // Float: parameters and their gradients fit the payload (Eval scans them).
  // Integer: exactly int16 parameters (padded) and int32 accumulators.
  const uint64_t payload_needed =
      integer ? ((uint64_t{state::ParamCount(init)} * 2 + 3) & ~uint64_t{3}) +
                    uint64_t{state::ParamCount(init)} * 4
              : uint64_t{state::ParamCount(init)} * 8;
  TFLMT_ENSURE_MSG(
      initial.bytes >= state::kHeaderBytes && initial.bytes <= state.bytes &&
          std::memcmp(init, state::kMagic, 4) == 0 &&
          state::LoadU32(init, state::kPayloadBytesOffset) ==
              state.bytes - state::kHeaderBytes &&
          payload_needed <= state.bytes - state::kHeaderBytes,
      "TFLMT_STATE: the model's initial state does not fit its state tensor");
  data->has_mode = inputs > kMode;
  if (data->has_mode) {
    port::TensorInfo mode;
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kMode, &mode));
    TFLMT_ENSURE_MSG(mode.type == port::DataType::kInt32 &&
                         mode.FlatSize() == 1,
                     "TFLMT_STATE: mode must be int32 [1]");
  }
  for (int i = kFirstSample; i < inputs; ++i) {
    port::TensorInfo sample;
    TFLMT_ENSURE_OK(port::InputInfo(context, node, i, &sample));
    TFLMT_ENSURE_MSG(sample.type == port::DataType::kFloat32,
                     "TFLMT_STATE: guarded data inputs must be float32");
  }
  data->integer = integer;
  data->initial = init;
  data->initial_bytes = initial.bytes;
  data->state_bytes = state.bytes;
  return port::Status::kOk;
}

bool HeaderIsZero(const uint8_t* header) {
  for (size_t i = 0; i < state::kHeaderBytes; ++i) {
    if (header[i] != 0) return false;
  }
  return true;
}

// Why a state's header does not match this model, or null when it does.
// A few dozen bytes: cheap enough to run on every invocation.
const char* HeaderMismatch(const OpData& data, const uint8_t* s) {
  const uint8_t* init = data.initial;
  uint16_t version = 0;
  std::memcpy(&version, s + state::kVersionOffset, 2);
  if (std::memcmp(s, state::kMagic, 4) != 0) {
    return "not a tflm-train state (bad magic number)";
  }
  if (version != state::kFormatVersion) {
    return "state format version differs from this build's";
  }
  if (std::memcmp(s + state::kModelHashOffset, init + state::kModelHashOffset,
                  8) != 0) {
    return "state was saved for another base model";
  }
  if (std::memcmp(s + state::kLayoutHashOffset,
                  init + state::kLayoutHashOffset, 4) != 0 ||
      std::memcmp(s + state::kHeaderBytesOffset,
                  init + state::kHeaderBytesOffset, 2) != 0 ||
      std::memcmp(s + state::kPayloadBytesOffset,
                  init + state::kPayloadBytesOffset, 8) != 0) {
    return "state was saved for another conversion of this model "
           "(different adapters or optimizer)";
  }
  return nullptr;
}

// The full check of a state entering the interpreter (LIVE clear).
const char* PayloadProblem(const OpData& data, const uint8_t* s) {
  if (state::LoadU32(s, state::kCrcOffset) !=
      state::ComputeCrc(s, data.state_bytes)) {
    return "state is corrupt (checksum mismatch)";
  }
  if (data.integer) return nullptr;  // integers are always finite
  // Parameters, then the optimizer slots after the gradients. Pending
  // gradients may legitimately hold a non-finite value: the optimizer drops
  // such an update instead of applying it.
  const size_t params = state::ParamCount(s);
  const uint8_t* payload = s + state::kHeaderBytes;
  const size_t values = (data.state_bytes - state::kHeaderBytes) / 4;
  if (!state::AllFinite(payload, params) ||
      (values > 2 * params &&
       !state::AllFinite(payload + 8 * params, values - 2 * params))) {
    return "state holds non-finite parameters (NaN or infinity)";
  }
  return nullptr;
}

bool SampleIsFinite(port::Context* context, port::Node* node) {
  for (int i = kFirstSample; i < port::NumInputs(node); ++i) {
    const port::TensorView sample = port::Input(context, node, i);
    if (!state::AllFinite(sample.As<uint8_t>(),
                          static_cast<size_t>(sample.FlatSize()))) {
      return false;
    }
  }
  return true;
}

port::Status Eval(port::Context* context, port::Node* node) {
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  uint8_t* s = port::Input(context, node, kState).As<uint8_t>();
  const bool fresh = HeaderIsZero(s);
  if (fresh) {
    std::memcpy(s, data.initial, data.initial_bytes);
    std::memset(s + data.initial_bytes, 0,
                data.state_bytes - data.initial_bytes);
    state::Import(s);
  }
  if (const char* problem = HeaderMismatch(data, s)) {
    port::Log("TFLMT_STATE: %s", problem);
    return port::Status::kError;
  }
  if (!state::IsLive(s)) {
    if (const char* problem = PayloadProblem(data, s)) {
      if (fresh) problem = "the model's initial state is corrupt";
      port::Log("TFLMT_STATE: %s", problem);
      return port::Status::kError;
    }
    state::SetLive(s, true);
  }
  if (data.has_mode) {
    int32_t* mode = port::Input(context, node, kMode).As<int32_t>();
    if (*mode == static_cast<int32_t>(Mode::kTrain) &&
        !SampleIsFinite(context, node)) {
      *mode = static_cast<int32_t>(Mode::kSkip);
    }
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kStateKernel = {kStateOpName, Init, nullptr,
                                      Prepare, Eval, nullptr};

}  // namespace tflmt
