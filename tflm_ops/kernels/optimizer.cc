// TFLMT_OPTIMIZER: last operator of a converted model; applies the update.
//
// Backward ops add each sample's gradients into the state. In "train" mode
// this op counts the sample and, every `accumulate` samples, applies SGD,
// momentum or Adam (Keras' formulas) to the mean gradient, optionally
// clipped to a global norm; then it clears the gradients.
// An update that would make any parameter or optimizer slot non-finite (a
// gradient that is not finite, or a huge learning rate) is dropped instead of
// applied and counted in the state header ("skipped updates"), so nothing
// can poison the adapter. In "skip" mode (a bad sample, see TFLMT_STATE and
// TFLMT_LOSS) it only counts the sample ("skipped samples"); the sample does
// not count toward `accumulate`, so the rest of its batch still updates.
// The state's checksum is not maintained here: it is sealed on export
// (kernels/training_state.h).
//
// With a regularizer (options version 2) the update also pulls the
// parameters back toward their starting values w0, against forgetting:
// L2-SP adds lambda (w - w0) to the mean gradient, EWC lambda F (w - w0)
// with a Fisher diagonal F computed at conversion from base-task data. w0 is
// the model's initial state (the parameters the conversion made, in flash)
// and F a constant tensor, so neither costs RAM and neither changes when a
// device saves, commits or rolls back its state.
//
// Inputs:  0 state, 1 mode, 2 learning rate (float32 [1]);
//          regularized: 3 initial state (uint8 constant: header, then w0),
//          4 Fisher diagonal (float32 [P] constant; EWC only)
// Outputs: none
#include <cmath>
#include <cstring>
#include <new>

#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/options.h"
#include "kernels/training_state.h"
#include "reference/optimizer.h"

namespace tflmt {
namespace {

constexpr int kState = 0;
constexpr int kMode = 1;
constexpr int kLearningRate = 2;
constexpr int kAnchor = 3;
constexpr int kFisher = 4;

using Kind = OptimizerKind;

// The regularizer sits beside `kind` and w0 / F are looked up in Eval, so
// OpData (persistent arena) is no larger than without regularizers.
struct OpData {
  Kind kind = Kind::kSgd;
  RegularizerKind regularizer = RegularizerKind::kNone;
  int accumulate = 1;
  float clip_norm = 0.0f;
  float momentum = 0.0f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-7f;
  float reg_lambda = 0.0f;
  size_t state_bytes = 0;
};

int SlotCount(Kind kind) {
  return kind == Kind::kAdam ? 2 : (kind == Kind::kMomentum ? 1 : 0);
}

void* Init(port::Context* context, const char* options, size_t length) {
  // Version 2 appends the regularizer to version 1's fields.
  const bool regularized = options != nullptr && length > 0 &&
                           static_cast<uint8_t>(options[0]) ==
                               kOptimizerRegularizedVersion;
  return InitOpData<OpData>(
      context, options, length, kOptimizerOpName,
      regularized ? kOptimizerRegularizedVersion : kOptimizerOptionsVersion,
      [regularized](OptionsReader& reader, OpData* data) {
        const uint8_t kind = reader.U8();
        data->kind = static_cast<Kind>(kind);
        data->accumulate = reader.I32();
        data->clip_norm = reader.F32();
        data->momentum = reader.F32();
        data->beta1 = reader.F32();
        data->beta2 = reader.F32();
        data->epsilon = reader.F32();
        uint8_t regularizer = 0;
        if (regularized) {
          regularizer = reader.U8();
          data->regularizer = static_cast<RegularizerKind>(regularizer);
          data->reg_lambda = reader.F32();
        }
        return kind <= static_cast<uint8_t>(Kind::kAdam) &&
               data->accumulate >= 1 &&
               regularizer <= static_cast<uint8_t>(RegularizerKind::kEwc) &&
               data->reg_lambda >= 0.0f && std::isfinite(data->reg_lambda);
      });
}

// w0 is read from the initial state, which must hold a header and the same
// number of parameters the state has room for; F must have one value per
// parameter.
port::Status PrepareRegularizer(port::Context* context, port::Node* node,
                                const port::TensorInfo& state,
                                const OpData* data) {
  port::TensorInfo anchor;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kAnchor, &anchor));
  TFLMT_ENSURE_MSG(anchor.type == port::DataType::kUInt8 &&
                       anchor.constant_data != nullptr &&
                       anchor.bytes >= state::kHeaderBytes,
                   "TFLMT_OPTIMIZER: w0 must be the model's initial state");
  const uint8_t* initial = static_cast<const uint8_t*>(anchor.constant_data);
  const uint64_t params = state::LoadU32(initial, state::kParamCountOffset);
  TFLMT_ENSURE_MSG(
      std::memcmp(initial, state::kMagic, 4) == 0 &&
          anchor.bytes >= state::kHeaderBytes + 4 * params &&
          state.bytes >= state::kHeaderBytes + 8 * params,
      "TFLMT_OPTIMIZER: the initial state does not hold w0 for this state");
  if (data->regularizer == RegularizerKind::kEwc) {
    port::TensorInfo fisher;
    TFLMT_ENSURE_OK(port::InputInfo(context, node, kFisher, &fisher));
    TFLMT_ENSURE_MSG(fisher.type == port::DataType::kFloat32 &&
                         fisher.constant_data != nullptr &&
                         static_cast<uint64_t>(fisher.FlatSize()) == params,
                     "TFLMT_OPTIMIZER: the Fisher diagonal must be a float32 "
                     "constant with one value per parameter");
  }
  return port::Status::kOk;
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_OPTIMIZER: bad options");
  const int regularizer_inputs =
      data->regularizer == RegularizerKind::kNone
          ? 0
          : (data->regularizer == RegularizerKind::kEwc ? 2 : 1);
  TFLMT_ENSURE_MSG(port::NumInputs(node) == 3 + regularizer_inputs &&
                       port::NumOutputs(node) == 0,
                   "TFLMT_OPTIMIZER: takes state, mode and learning rate "
                   "(and w0, F for a regularizer)");
  port::TensorInfo state, mode, learning_rate;
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kState, &state));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kMode, &mode));
  TFLMT_ENSURE_OK(port::InputInfo(context, node, kLearningRate, &learning_rate));
  TFLMT_ENSURE_MSG(state.type == port::DataType::kUInt8 && state.is_variable &&
                       state.bytes > state::kHeaderBytes,
                   "TFLMT_OPTIMIZER: state must be a uint8 variable");
  TFLMT_ENSURE_MSG(mode.type == port::DataType::kInt32 && mode.FlatSize() == 1,
                   "TFLMT_OPTIMIZER: mode must be int32 [1]");
  TFLMT_ENSURE_MSG(learning_rate.type == port::DataType::kFloat32 &&
                       learning_rate.FlatSize() == 1,
                   "TFLMT_OPTIMIZER: learning rate must be float32 [1]");
  data->state_bytes = state.bytes;
  if (regularizer_inputs > 0) {
    TFLMT_ENSURE_OK(PrepareRegularizer(context, node, state, data));
  }
  return port::Status::kOk;
}

// Whether the update would leave every parameter and slot finite; writes
// nothing.
bool UpdateIsFinite(const OpData& data, uint8_t* s, int params, float lr,
                    float grad_scale, uint32_t step) {
  const float* weights = state::Params(s);
  const float* grads = state::Grads(s);
  switch (data.kind) {
    case Kind::kSgd:
      return reference::SgdUpdateIsFinite(weights, grads, params, lr,
                                          grad_scale);
    case Kind::kMomentum:
      return reference::MomentumUpdateIsFinite(
          weights, grads, state::OptimizerSlot(s, 0), params, lr,
          data.momentum, grad_scale);
    case Kind::kAdam:
      return reference::AdamUpdateIsFinite(
          weights, grads, state::OptimizerSlot(s, 0),
          state::OptimizerSlot(s, 1), params, lr, data.beta1, data.beta2,
          data.epsilon, static_cast<int>(step), grad_scale);
  }
  return false;
}

void ApplyUpdate(const OpData& data, uint8_t* s, int params, float lr,
                 float grad_scale, uint32_t step) {
  float* weights = state::Params(s);
  const float* grads = state::Grads(s);
  switch (data.kind) {
    case Kind::kSgd:
      reference::SgdUpdate(weights, grads, params, lr, grad_scale);
      break;
    case Kind::kMomentum:
      reference::MomentumUpdate(weights, grads, state::OptimizerSlot(s, 0),
                                params, lr, data.momentum, grad_scale);
      break;
    case Kind::kAdam:
      reference::AdamUpdate(weights, grads, state::OptimizerSlot(s, 0),
                            state::OptimizerSlot(s, 1), params, lr,
                            data.beta1, data.beta2, data.epsilon,
                            static_cast<int>(step), grad_scale);
      break;
  }
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
  const float lr = *port::Input(context, node, kLearningRate).As<float>();
  const int params = static_cast<int>(state::ParamCount(s));
  if (static_cast<size_t>(params) * sizeof(float) * (2 + SlotCount(data.kind)) >
      data.state_bytes - state::kHeaderBytes) {
    port::Log("TFLMT_OPTIMIZER: state too small for its parameters");
    return port::Status::kError;
  }
  if (!(lr >= 0.0f) || !std::isfinite(lr)) {
    port::Log("TFLMT_OPTIMIZER: learning rate must be a finite value >= 0");
    return port::Status::kError;
  }
  float* grads = state::Grads(s);
  const uint32_t accumulated = state::LoadU32(s, state::kAccumulatedOffset) + 1;
  if (static_cast<int>(accumulated) < data.accumulate) {
    state::StoreU32(s, state::kAccumulatedOffset, accumulated);
    return port::Status::kOk;
  }

  if (data.regularizer != RegularizerKind::kNone) {
    // The grads hold a sum over `accumulate` samples: scale the penalty's
    // gradient the same way so that the rule's 1/N leaves lambda F (w - w0).
    // w0 follows the initial state's header (16-byte aligned buffer).
    const float* anchor = reinterpret_cast<const float*>(
        port::Input(context, node, kAnchor).As<uint8_t>() + state::kHeaderBytes);
    const float* fisher =
        data.regularizer == RegularizerKind::kEwc
            ? port::Input(context, node, kFisher).As<float>()
            : nullptr;
    reference::AddAnchorPenaltyGradient(
        grads, state::Params(s), anchor, fisher, params,
        data.reg_lambda * static_cast<float>(data.accumulate));
  }
  const uint32_t step = state::LoadU32(s, state::kStepOffset) + 1;
  bool applied = false;
  if (std::isfinite(reference::SumOfSquares(grads, params))) {
    float grad_scale = 1.0f / static_cast<float>(data.accumulate);
    grad_scale *=
        reference::ClipFactor(grads, params, grad_scale, data.clip_norm);
    if (UpdateIsFinite(data, s, params, lr, grad_scale, step)) {
      ApplyUpdate(data, s, params, lr, grad_scale, step);
      state::StoreU32(s, state::kStepOffset, step);
      applied = true;
    }
  }
  if (!applied) state::Increment(s, state::kSkippedOffset);
  std::memset(grads, 0, sizeof(float) * params);
  state::StoreU32(s, state::kAccumulatedOffset, 0);
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kOptimizerKernel = {kOptimizerOpName, Init, nullptr,
                                    Prepare, Eval, nullptr};

}  // namespace tflmt
