#include "device/trainer.h"

#include <cmath>
#include <cstring>

#include "device/distill.h"
#include "kernels/kernels.h"
#include "kernels/training_state.h"
#include "reference/quantization.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace tflmt {
namespace {

// Converted models append four inputs and two outputs.
constexpr size_t kAddedInputs = 4;   // target, learning_rate, mode, state
constexpr size_t kAddedOutputs = 2;  // loss, state

size_t ElementCount(const TfLiteTensor* tensor) {
  size_t n = 1;
  for (int i = 0; i < tensor->dims->size; ++i) {
    n *= static_cast<size_t>(tensor->dims->data[i]);
  }
  return n;
}

bool IsActivationType(TfLiteType type) {
  return type == kTfLiteFloat32 || type == kTfLiteInt8 || type == kTfLiteInt16;
}

// Output 0 may also be uint8: microWakeWord models end in a QUANTIZE to uint8.
bool IsOutputType(TfLiteType type) {
  return IsActivationType(type) || type == kTfLiteUInt8;
}

bool IsScalar(const TfLiteTensor* tensor, TfLiteType type) {
  return tensor != nullptr && tensor->type == type && ElementCount(tensor) == 1;
}

// TFLM's QUANTIZE convention (float division, round half away from zero),
// which tflm_train.trainer.quantize follows too: firmware feeds the model
// the bytes `tflm-train fit` fed it.
int32_t QuantizeValue(float value, float scale, int32_t zero_point,
                      int32_t qmin, int32_t qmax) {
  return reference::QuantizeValue(value, scale, zero_point, qmin, qmax);
}

bool AllFinite(const float* values, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) return false;
  }
  return true;
}

bool HeaderIsZero(const uint8_t* state) {
  for (size_t i = 0; i < state::kHeaderBytes; ++i) {
    if (state[i] != 0) return false;
  }
  return true;
}

}  // namespace

Trainer::Trainer(tflite::MicroInterpreter& interpreter)
    : interpreter_(interpreter) {}

TfLiteStatus Trainer::Begin() {
  ready_ = false;
  const size_t inputs = interpreter_.inputs_size();
  const size_t outputs = interpreter_.outputs_size();
  if (inputs <= kAddedInputs || outputs <= kAddedOutputs) {
    MicroPrintf("Trainer: not a model converted by tflm-train "
                "(%d inputs, %d outputs)",
                static_cast<int>(inputs), static_cast<int>(outputs));
    return kTfLiteError;
  }
  target_ = inputs - 4;
  learning_rate_ = inputs - 3;
  mode_ = inputs - 2;
  state_in_ = inputs - 1;
  loss_ = outputs - 2;
  state_out_ = outputs - 1;

  const TfLiteTensor* x = interpreter_.input(0);
  const TfLiteTensor* y = interpreter_.output(0);
  const TfLiteTensor* target = interpreter_.input(target_);
  const TfLiteTensor* state_in = interpreter_.input(state_in_);
  const TfLiteTensor* state_out = interpreter_.output(state_out_);
  // The state is one tensor that is both an input and an output; the checks
  // on it are what tells a converted model from one that only looks similar.
  const bool ok =
      x != nullptr && IsActivationType(x->type) && y != nullptr &&
      IsOutputType(y->type) && target != nullptr &&
      (target->type == kTfLiteInt32 || target->type == kTfLiteFloat32) &&
      IsScalar(interpreter_.input(learning_rate_), kTfLiteFloat32) &&
      IsScalar(interpreter_.input(mode_), kTfLiteInt32) &&
      IsScalar(interpreter_.output(loss_), kTfLiteFloat32) &&
      state_in != nullptr && state_out != nullptr &&
      state_in->type == kTfLiteUInt8 && state_in->is_variable &&
      state_in->data.data == state_out->data.data &&
      state_in->bytes == state_out->bytes;
  if (!ok) {
    MicroPrintf("Trainer: the model's inputs/outputs are not those of a "
                "model converted by tflm-train");
    return kTfLiteError;
  }
  // A `--distill` model's target is one row [label, weight, probabilities]
  // per sample: two values more than the output (an MSE/BCE target has as
  // many, a label one).
  distill_ = target->type == kTfLiteFloat32 &&
             ElementCount(target) == ElementCount(y) + kDistillTargetHeader;
  ready_ = true;
  return kTfLiteOk;
}

size_t Trainer::InputCount() const {
  return ready_ ? ElementCount(interpreter_.input(0)) : 0;
}

size_t Trainer::OutputCount() const {
  return ready_ ? ElementCount(interpreter_.output(0)) : 0;
}

size_t Trainer::InputBytes() const {
  return ready_ ? interpreter_.input(0)->bytes : 0;
}

TfLiteStatus Trainer::SetInputBytes(const void* bytes, size_t size) {
  if (!ready_ || bytes == nullptr || size != InputBytes()) return kTfLiteError;
  TfLiteTensor* x = interpreter_.input(0);
  std::memcpy(x->data.raw, bytes, size);
  // Float inputs are checked like SetInput's; quantized bytes are values.
  input_not_finite_ =
      x->type == kTfLiteFloat32 && !AllFinite(x->data.f, size / sizeof(float));
  return kTfLiteOk;
}

TfLiteStatus Trainer::SetInput(const float* real_values) {
  if (!ready_) return kTfLiteError;
  TfLiteTensor* x = interpreter_.input(0);
  const size_t n = ElementCount(x);
  // Checked here: quantizing would turn a NaN into an ordinary int8 value.
  input_not_finite_ = !AllFinite(real_values, n);
  const float scale = x->params.scale;
  const int32_t zero_point = x->params.zero_point;
  switch (x->type) {
    case kTfLiteFloat32:
      std::memcpy(x->data.f, real_values, n * sizeof(float));
      return kTfLiteOk;
    case kTfLiteInt8:
      for (size_t i = 0; i < n; ++i) {
        x->data.int8[i] = static_cast<int8_t>(
            QuantizeValue(real_values[i], scale, zero_point, -128, 127));
      }
      return kTfLiteOk;
    default:  // int16 (Begin admits nothing else)
      for (size_t i = 0; i < n; ++i) {
        x->data.i16[i] = static_cast<int16_t>(
            QuantizeValue(real_values[i], scale, zero_point, -32768, 32767));
      }
      return kTfLiteOk;
  }
}

TfLiteStatus Trainer::SetLabel(int32_t label) {
  if (!ready_) return kTfLiteError;
  TfLiteTensor* target = interpreter_.input(target_);
  if (distill_) {  // [label, weight 0, ...]: plain cross-entropy
    return SetDistillTarget(label, 0.0f, nullptr);
  }
  if (!IsScalar(target, kTfLiteInt32)) {
    MicroPrintf("Trainer: SetLabel needs a one-sample cross-entropy model");
    return kTfLiteError;
  }
  target->data.i32[0] = label;  // outside the classes: TFLMT_LOSS skips it
  target_not_finite_ = false;
  return kTfLiteOk;
}

TfLiteStatus Trainer::SetTarget(const float* values) {
  if (!ready_) return kTfLiteError;
  TfLiteTensor* target = interpreter_.input(target_);
  if (target->type != kTfLiteFloat32) {
    MicroPrintf("Trainer: this model's target is a label (use SetLabel)");
    return kTfLiteError;
  }
  const size_t n = ElementCount(target);
  target_not_finite_ = !AllFinite(values, n);
  std::memcpy(target->data.f, values, n * sizeof(float));
  return kTfLiteOk;
}

size_t Trainer::TargetCount() const {
  if (!ready_) return 0;
  return ElementCount(interpreter_.input(target_));
}

TfLiteStatus Trainer::SetDistillTarget(int32_t label, float weight,
                                       const float* teacher) {
  if (!ready_) return kTfLiteError;
  if (!distill_) {
    MicroPrintf("Trainer: SetDistillTarget needs a model converted with --distill");
    return kTfLiteError;
  }
  TfLiteTensor* target = interpreter_.input(target_);
  const size_t classes = ElementCount(target) - kDistillTargetHeader;
  if (teacher == nullptr) {  // weight 0: the probabilities are not read
    std::memset(target->data.f, 0, ElementCount(target) * sizeof(float));
    target->data.f[0] = static_cast<float>(label);
    target->data.f[1] = weight;
  } else {
    PackDistillTarget(label, weight, teacher, classes, target->data.f);
  }
  target_not_finite_ = !AllFinite(target->data.f, ElementCount(target));
  return kTfLiteOk;
}

TfLiteStatus Trainer::RecordTeacher(float* teacher) {
  if (!ready_ || !distill_) return kTfLiteError;
  if (input_not_finite_) return kTfLiteError;  // no teacher for a bad sample
  if (Run(static_cast<int32_t>(Mode::kInfer)) != kTfLiteOk) return kTfLiteError;
  // Outputs: [original..., teacher logits, loss, state].
  const TfLiteTensor* logits =
      interpreter_.output(interpreter_.outputs_size() - kAddedOutputs - 1);
  const size_t classes = ElementCount(interpreter_.input(target_)) -
                         kDistillTargetHeader;
  if (logits == nullptr || ElementCount(logits) != classes) return kTfLiteError;
  // The logits as real values, in place in `teacher`, then their softmax.
  for (size_t c = 0; c < classes; ++c) {
    switch (logits->type) {
      case kTfLiteFloat32:
        teacher[c] = logits->data.f[c];
        break;
      case kTfLiteInt8:
        teacher[c] = (logits->data.int8[c] - logits->params.zero_point) *
                     logits->params.scale;
        break;
      case kTfLiteInt16:
        teacher[c] = (logits->data.i16[c] - logits->params.zero_point) *
                     logits->params.scale;
        break;
      default:
        return kTfLiteError;
    }
  }
  return TeacherFromOutput(teacher, classes, true, teacher) ? kTfLiteOk
                                                             : kTfLiteError;
}

TfLiteStatus Trainer::Run(int32_t mode) {
  if (!ready_) return kTfLiteError;
  interpreter_.input(mode_)->data.i32[0] = mode;
  return interpreter_.Invoke();
}

TfLiteStatus Trainer::TrainStep(float learning_rate, float* loss) {
  if (!ready_) return kTfLiteError;
  interpreter_.input(learning_rate_)->data.f[0] = learning_rate;
  const bool skip = input_not_finite_ || target_not_finite_;
  const TfLiteStatus status =
      Run(static_cast<int32_t>(skip ? Mode::kSkip : Mode::kTrain));
  if (status == kTfLiteOk && loss != nullptr) {
    *loss = interpreter_.output(loss_)->data.f[0];
  }
  return status;
}

TfLiteStatus Trainer::EvaluateLoss(float* loss) {
  const TfLiteStatus status = Run(static_cast<int32_t>(Mode::kEvaluate));
  if (status == kTfLiteOk && loss != nullptr) {
    *loss = interpreter_.output(loss_)->data.f[0];
  }
  return status;
}

TfLiteStatus Trainer::Predict(float* out) {
  const TfLiteStatus status = Run(static_cast<int32_t>(Mode::kInfer));
  if (status != kTfLiteOk) return status;
  const TfLiteTensor* y = interpreter_.output(0);
  const size_t n = ElementCount(y);
  const float scale = y->params.scale;
  const int32_t zero_point = y->params.zero_point;
  for (size_t i = 0; i < n; ++i) {
    switch (y->type) {
      case kTfLiteFloat32:
        out[i] = y->data.f[i];
        break;
      case kTfLiteInt8:
        out[i] = static_cast<float>(y->data.int8[i] - zero_point) * scale;
        break;
      case kTfLiteUInt8:
        out[i] = static_cast<float>(y->data.uint8[i] - zero_point) * scale;
        break;
      default:  // int16
        out[i] = static_cast<float>(y->data.i16[i] - zero_point) * scale;
        break;
    }
  }
  return kTfLiteOk;
}

size_t Trainer::StateBytes() const {
  return ready_ ? interpreter_.output(state_out_)->bytes : 0;
}

Trainer::Counters Trainer::GetCounters() const {
  Counters counters = {0, 0, 0, 0, 0};
  if (!ready_) return counters;
  const uint8_t* s = interpreter_.output(state_out_)->data.uint8;
  counters.steps = state::LoadU32(s, state::kStepOffset);
  counters.skipped_updates = state::LoadU32(s, state::kSkippedOffset);
  counters.skipped_samples = state::LoadU32(s, state::kSkippedSamplesOffset);
  counters.rejected_episodes =
      state::LoadU32(s, state::kRejectedEpisodesOffset);
  counters.rollbacks = state::LoadU32(s, state::kRollbacksOffset);
  return counters;
}

TfLiteStatus Trainer::SaveState(uint8_t* dst, size_t capacity) const {
  const size_t bytes = StateBytes();
  if (bytes == 0 || capacity < bytes) return kTfLiteError;
  std::memcpy(dst, interpreter_.output(state_out_)->data.uint8, bytes);
  // The one CRC pass of an export; a fresh (all-zero) state stays zero.
  if (!HeaderIsZero(dst)) state::Export(dst, bytes);
  return kTfLiteOk;
}

TfLiteStatus Trainer::LoadState(const uint8_t* src, size_t size) {
  if (!ready_ || size != StateBytes()) {
    MicroPrintf("Trainer: a state of %d bytes does not fit this model's %d",
                static_cast<int>(size), static_cast<int>(StateBytes()));
    return kTfLiteError;
  }
  // A load starts a new session, as in Python: streaming buffers and other
  // variable tensors go back to their initial values too.
  const TfLiteStatus status = interpreter_.Reset();
  if (status != kTfLiteOk) return status;
  uint8_t* state = interpreter_.input(state_in_)->data.uint8;
  std::memcpy(state, src, size);
  // LIVE cleared: TFLMT_STATE verifies the whole state on the next
  // invocation (a saved state has it clear already; a raw copy may not).
  state::Import(state);
  return kTfLiteOk;
}

TfLiteStatus Trainer::Reset() { return interpreter_.Reset(); }

bool Trainer::OutputSaturated() const {
  if (!ready_) return false;
  const TfLiteTensor* y = interpreter_.output(0);
  const size_t n = ElementCount(y);
  for (size_t i = 0; i < n; ++i) {
    bool at_end;
    switch (y->type) {
      case kTfLiteInt8:
        at_end = y->data.int8[i] == -128 || y->data.int8[i] == 127;
        break;
      case kTfLiteInt16:
        at_end = y->data.i16[i] == -32768 || y->data.i16[i] == 32767;
        break;
      case kTfLiteUInt8:
        at_end = y->data.uint8[i] == 0 || y->data.uint8[i] == 255;
        break;
      default:  // float32 probabilities
        at_end = y->data.f[i] <= 1e-6f || y->data.f[i] >= 1.0f - 1e-6f;
        break;
    }
    if (!at_end) return false;
  }
  return true;
}

TfLiteStatus Trainer::Restore(const uint8_t* committed, size_t size,
                              EpisodeVerdict verdict) {
  if (!ready_ || size != StateBytes() || HeaderIsZero(committed)) {
    return kTfLiteError;
  }
  // The counters live in the state being replaced: read them first.
  constexpr size_t kCarried[] = {
      state::kSkippedOffset, state::kSkippedSamplesOffset,
      state::kRejectedEpisodesOffset, state::kRollbacksOffset};
  uint32_t values[4];
  const uint8_t* live = interpreter_.output(state_out_)->data.uint8;
  const uint8_t* source = HeaderIsZero(live) ? committed : live;
  for (size_t i = 0; i < 4; ++i) values[i] = state::LoadU32(source, kCarried[i]);
  const TfLiteStatus status = LoadState(committed, size);
  if (status != kTfLiteOk) return status;
  uint8_t* state = interpreter_.input(state_in_)->data.uint8;
  for (size_t i = 0; i < 4; ++i) state::StoreU32(state, kCarried[i], values[i]);
  state::Increment(state, verdict == EpisodeVerdict::kReject
                              ? state::kRejectedEpisodesOffset
                              : state::kRollbacksOffset);
  state::Seal(state, size);  // LIVE is clear: the next Invoke verifies it
  return kTfLiteOk;
}

}  // namespace tflmt
