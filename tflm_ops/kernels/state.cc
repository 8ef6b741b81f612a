// TFLMT_STATE: first operator of a converted model; guards the training state.
//
// The state tensor is a variable: TFLM zeroes it when the interpreter is
// created and on Reset(). An all-zero header therefore means "fresh", and this
// op copies the model's initial state (header and initial parameters, from
// flash) into it - so Reset() rolls the adapter back to its initial values.
// Anything else in the header is a state someone wrote (restored after a
// reboot, or imported): it must belong to this model and this state layout,
// and its checksum must hold, or the invocation fails with a message that
// says which check failed. A state already checked is not re-checked until
// its checksum field changes.
//
// Inputs:  0 state (uint8 variable), 1 initial state (uint8 constant)
// Outputs: none
#include <cstring>
#include <new>

#include "kernels/kernels.h"
#include "kernels/options.h"
#include "kernels/training_state.h"

namespace tflmt {
namespace {

constexpr int kState = 0;
constexpr int kInitial = 1;

struct OpData {
  const uint8_t* initial = nullptr;  // in the model (flash)
  size_t initial_bytes = 0;
  size_t state_bytes = 0;
  bool checked = false;  // the state's current checksum was verified
  uint32_t checked_crc = 0;
};

void* Init(port::Context* context, const char* options, size_t length) {
  OptionsReader reader(options, length);
  if (!reader.ReadVersion() || !reader.Finished()) {
    port::Log("TFLMT_STATE: options version is not %d", kOptionsVersion);
    return nullptr;
  }
  void* memory = port::AllocatePersistent(context, sizeof(OpData));
  return memory != nullptr ? new (memory) OpData() : nullptr;
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_STATE: bad options");
  TFLMT_ENSURE(port::NumInputs(node) == 2 && port::NumOutputs(node) == 0);
  port::TensorInfo state, initial;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kState, &state));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kInitial, &initial));
  TFLMT_ENSURE_MSG(state.type == port::DataType::kUInt8 && state.is_variable,
                   "TFLMT_STATE: state must be a uint8 variable tensor");
  TFLMT_ENSURE_MSG(initial.type == port::DataType::kUInt8 &&
                       initial.constant_data != nullptr,
                   "TFLMT_STATE: initial state must be a uint8 constant");
  const uint8_t* init = static_cast<const uint8_t*>(initial.constant_data);
  TFLMT_ENSURE_MSG(
      initial.bytes >= state::kHeaderBytes && initial.bytes <= state.bytes &&
          std::memcmp(init, state::kMagic, 4) == 0 &&
          state::LoadU32(init, state::kPayloadBytesOffset) ==
              state.bytes - state::kHeaderBytes,
      "TFLMT_STATE: the model's initial state does not fit its state tensor");
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

// Why a written state cannot be used, or null when it can.
const char* Mismatch(const OpData& data, const uint8_t* s) {
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
  if (state::LoadU32(s, state::kCrcOffset) !=
      state::ComputeCrc(s, data.state_bytes)) {
    return "state is corrupt (checksum mismatch)";
  }
  return nullptr;
}

port::Status Eval(port::Context* context, port::Node* node) {
  OpData& data = *static_cast<OpData*>(port::UserData(node));
  uint8_t* s = port::Input(context, node, kState).As<uint8_t>();
  if (HeaderIsZero(s)) {
    std::memcpy(s, data.initial, data.initial_bytes);
    std::memset(s + data.initial_bytes, 0,
                data.state_bytes - data.initial_bytes);
    if (state::LoadU32(s, state::kCrcOffset) !=
        state::ComputeCrc(s, data.state_bytes)) {
      port::Log("TFLMT_STATE: the model's initial state is corrupt");
      return port::Status::kError;
    }
  } else if (data.checked &&
             state::LoadU32(s, state::kCrcOffset) == data.checked_crc) {
    return port::Status::kOk;
  } else if (const char* problem = Mismatch(data, s)) {
    data.checked = false;
    port::Log("TFLMT_STATE: %s", problem);
    return port::Status::kError;
  }
  data.checked = true;
  data.checked_crc = state::LoadU32(s, state::kCrcOffset);
  return port::Status::kOk;
}

void Reset(port::Context* context, void* op_data) {
  (void)context;
  if (op_data != nullptr) static_cast<OpData*>(op_data)->checked = false;
}

}  // namespace

const port::KernelDef kStateKernel = {kStateOpName, Init, nullptr,
                                Prepare, Eval, Reset};

}  // namespace tflmt
