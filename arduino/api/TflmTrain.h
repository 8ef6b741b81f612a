// TflmTrain: on-device fine-tuning for Arduino, over the TFLM library.
//
// A model made by `tflm-train convert` trains itself inside TFLM's
// MicroInterpreter; this class holds the interpreter and names the verbs:
//
//   #include <TflmTrain.h>
//   #include "model_data.h"                  // tflm-train convert --c-array
//   alignas(16) uint8_t arena[40 * 1024];
//   TflmTrainer trainer;
//   trainer.begin(model, arena, sizeof(arena));
//   float loss;
//   trainer.train(features, label, 0.02f, &loss);   // one training step
//   int cls = trainer.classify(features);           // inference only
//   trainer.saveState(buffer, sizeof(buffer));      // the adapter, to flash
//
// Sketches include nothing from TFLM: only this header (and TflmTrainStorage.h
// to keep the adapter across resets). TflmTrain.cpp is the one place that
// includes TFLM's headers; the sketch-facing types are plain C++.
//
// Memory: everything lives in the caller's arena (no heap): the interpreter
// and op resolver objects first (interpreterBytes()), then TFLM's tensor arena.
// Size it with `tflm-train report` (its arena figure is for x86-64; a 32-bit
// target needs a little less) plus interpreterBytes().
//
// Operators: the model's own builtin ops must be among FULLY_CONNECTED,
// CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D, MEAN, SOFTMAX,
// RESHAPE, ADD, MUL, RELU, RELU6, LOGISTIC, QUANTIZE, DEQUANTIZE; tflm-train's
// own ops are all registered. For another set (or less flash), drive
// tflmt::Trainer (tflm_train/device/trainer.h) with your own resolver.
#ifndef TFLM_TRAIN_ARDUINO_TFLMTRAIN_H_
#define TFLM_TRAIN_ARDUINO_TFLMTRAIN_H_

#include <stddef.h>
#include <stdint.h>

class TflmTrainer {
 public:
  TflmTrainer() = default;
  ~TflmTrainer();
  TflmTrainer(const TflmTrainer&) = delete;
  TflmTrainer& operator=(const TflmTrainer&) = delete;

  // Sets the interpreter up in `arena` (16-byte aligned, kept for the
  // trainer's lifetime) and checks that the model was converted by tflm-train.
  // False with errorMessage() set when it does not fit or is not converted.
  bool begin(const uint8_t* model, uint8_t* arena, size_t arena_bytes);
  bool ready() const { return impl_ != nullptr; }
  // Why the last call failed, for Serial.
  const char* errorMessage() const { return error_; }

  // Values in the model's input / output (all rows); inputs are real values,
  // quantized here for an int8 model exactly as `tflm-train fit` does.
  size_t inputCount() const;
  size_t outputCount() const;

  // One training step on one sample (cross-entropy: the class label). *loss is
  // the sample's loss before the update.
  bool train(const float* input, int32_t label, float learning_rate, float* loss);
  // The same with real-valued targets (MSE / binary cross-entropy models).
  bool trainTarget(const float* input, const float* target, float learning_rate, float* loss);
  // The loss of one sample; nothing changes.
  bool evaluate(const float* input, int32_t label, float* loss);
  // Inference only (no backward work runs): output 0 as real values.
  bool predict(const float* input, float* output);
  // The most probable class, or -1 on error (up to kMaxClasses outputs).
  static const size_t kMaxClasses = 64;
  int classify(const float* input);

  // The training state (trainable parameters + optimizer slots): what to keep
  // across resets. stateBytes() is the same for every state of a model.
  size_t stateBytes() const;
  bool saveState(uint8_t* dst, size_t capacity);
  // Loads a saved state. It is checked by the next train/evaluate/predict,
  // which fails if the state belongs to another model or is corrupt (then call
  // reset() or load another state).
  bool loadState(const uint8_t* src, size_t size);
  // Back to the model's initial adapter.
  bool reset();

  // Bytes of the arena in use: the interpreter objects plus TFLM's tensors.
  size_t arenaUsedBytes() const;
  // Bytes at the start of the arena taken by the interpreter objects.
  static size_t interpreterBytes();

 private:
  struct Impl;
  bool fail(const char* message);
  bool check();

  Impl* impl_ = nullptr;
  const char* error_ = "begin() not called";
};

#endif  // TFLM_TRAIN_ARDUINO_TFLMTRAIN_H_
