// TflmTrainer over TFLM: the only file of the Arduino API that sees TFLM.
#include "TflmTrain.h"

#include <new>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tflm_train/device/trainer.h"
#include "tflm_train/port/tflm/tflm_train_ops.h"

namespace {

// The builtin ops TflmTrain.h promises.
constexpr unsigned int kBuiltinOps = 15;
using Resolver = tflite::MicroMutableOpResolver<tflmt::AllKernels::kCount + kBuiltinOps>;

TfLiteStatus AddBuiltins(Resolver& resolver) {
  const TfLiteStatus results[] = {
      resolver.AddFullyConnected(), resolver.AddConv2D(),   resolver.AddDepthwiseConv2D(),
      resolver.AddMaxPool2D(),      resolver.AddAveragePool2D(), resolver.AddMean(),
      resolver.AddSoftmax(),        resolver.AddReshape(),  resolver.AddAdd(),
      resolver.AddMul(),            resolver.AddRelu(),     resolver.AddRelu6(),
      resolver.AddLogistic(),       resolver.AddQuantize(), resolver.AddDequantize(),
  };
  static_assert(sizeof(results) / sizeof(results[0]) == kBuiltinOps, "kBuiltinOps");
  for (TfLiteStatus status : results) {
    if (status != kTfLiteOk) return status;
  }
  return kTfLiteOk;
}

constexpr size_t kAlignment = 16;

size_t AlignUp(size_t value) { return (value + kAlignment - 1) & ~(kAlignment - 1); }

}  // namespace

// Constructed in place at the start of the caller's arena.
struct TflmTrainer::Impl {
  Impl(const tflite::Model* model, uint8_t* tensor_arena, size_t tensor_bytes)
      : interpreter(model, resolver, tensor_arena, tensor_bytes), trainer(interpreter) {}

  Resolver resolver;  // filled before interpreter.AllocateTensors()
  tflite::MicroInterpreter interpreter;
  tflmt::Trainer trainer;
};

TflmTrainer::~TflmTrainer() {
  if (impl_ != nullptr) impl_->~Impl();
}

size_t TflmTrainer::interpreterBytes() { return AlignUp(sizeof(Impl)); }

bool TflmTrainer::fail(const char* message) {
  error_ = message;
  return false;
}

bool TflmTrainer::check() {
  if (impl_ == nullptr) return fail("begin() has not succeeded");
  return true;
}

bool TflmTrainer::begin(const uint8_t* model_data, uint8_t* arena, size_t arena_bytes) {
  if (impl_ != nullptr) {
    impl_->~Impl();
    impl_ = nullptr;
  }
  if (model_data == nullptr || arena == nullptr) return fail("begin: no model or no arena");
  if (reinterpret_cast<uintptr_t>(arena) % kAlignment != 0) return fail("begin: arena must be 16-byte aligned");
  if (arena_bytes <= interpreterBytes()) return fail("begin: arena too small for the interpreter");
  const tflite::Model* model = tflite::GetModel(model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) return fail("begin: not a .tflite of this schema version");

  Impl* impl = new (arena) Impl(model, arena + interpreterBytes(), arena_bytes - interpreterBytes());
  if (AddBuiltins(impl->resolver) != kTfLiteOk || tflmt::RegisterOps(impl->resolver) != kTfLiteOk) {
    impl->~Impl();
    return fail("begin: op resolver full");
  }
  if (impl->interpreter.AllocateTensors() != kTfLiteOk) {
    impl->~Impl();
    return fail("begin: AllocateTensors failed (arena too small, or an op missing: see the log)");
  }
  if (impl->trainer.Begin() != kTfLiteOk) {
    impl->~Impl();
    return fail("begin: not a model converted by tflm-train");
  }
  impl_ = impl;
  error_ = "";
  return true;
}

size_t TflmTrainer::inputCount() const { return impl_ != nullptr ? impl_->trainer.InputCount() : 0; }

size_t TflmTrainer::outputCount() const { return impl_ != nullptr ? impl_->trainer.OutputCount() : 0; }

bool TflmTrainer::train(const float* input, int32_t label, float learning_rate, float* loss) {
  if (!check()) return false;
  tflmt::Trainer& t = impl_->trainer;
  if (t.SetInput(input) != kTfLiteOk || t.SetLabel(label) != kTfLiteOk) return fail("train: bad sample");
  if (t.TrainStep(learning_rate, loss) != kTfLiteOk) return fail("train: step failed (see the log)");
  return true;
}

bool TflmTrainer::trainTarget(const float* input, const float* target, float learning_rate, float* loss) {
  if (!check()) return false;
  tflmt::Trainer& t = impl_->trainer;
  if (t.SetInput(input) != kTfLiteOk || t.SetTarget(target) != kTfLiteOk) return fail("train: bad sample");
  if (t.TrainStep(learning_rate, loss) != kTfLiteOk) return fail("train: step failed (see the log)");
  return true;
}

bool TflmTrainer::evaluate(const float* input, int32_t label, float* loss) {
  if (!check()) return false;
  tflmt::Trainer& t = impl_->trainer;
  if (t.SetInput(input) != kTfLiteOk || t.SetLabel(label) != kTfLiteOk) return fail("evaluate: bad sample");
  if (t.EvaluateLoss(loss) != kTfLiteOk) return fail("evaluate: failed (see the log)");
  return true;
}

bool TflmTrainer::predict(const float* input, float* output) {
  if (!check()) return false;
  tflmt::Trainer& t = impl_->trainer;
  if (t.SetInput(input) != kTfLiteOk) return fail("predict: bad input");
  if (t.Predict(output) != kTfLiteOk) return fail("predict: failed (see the log)");
  return true;
}

int TflmTrainer::classify(const float* input) {
  if (!check()) return -1;
  const size_t classes = outputCount();
  if (classes == 0 || classes > kMaxClasses) {
    fail("classify: too many outputs");
    return -1;
  }
  float scores[kMaxClasses];
  if (!predict(input, scores)) return -1;
  size_t best = 0;
  for (size_t i = 1; i < classes; ++i) {
    if (scores[i] > scores[best]) best = i;
  }
  return static_cast<int>(best);
}

size_t TflmTrainer::stateBytes() const { return impl_ != nullptr ? impl_->trainer.StateBytes() : 0; }

bool TflmTrainer::saveState(uint8_t* dst, size_t capacity) {
  if (!check()) return false;
  if (impl_->trainer.SaveState(dst, capacity) != kTfLiteOk) return fail("saveState: buffer too small");
  return true;
}

bool TflmTrainer::loadState(const uint8_t* src, size_t size) {
  if (!check()) return false;
  if (impl_->trainer.LoadState(src, size) != kTfLiteOk) return fail("loadState: wrong size for this model");
  return true;
}

bool TflmTrainer::reset() {
  if (!check()) return false;
  if (impl_->trainer.Reset() != kTfLiteOk) return fail("reset failed");
  return true;
}

size_t TflmTrainer::arenaUsedBytes() const {
  return impl_ != nullptr ? interpreterBytes() + impl_->interpreter.arena_used_bytes() : 0;
}
