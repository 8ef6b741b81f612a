// tflmt::Trainer: the training loop's verbs over a model made by
// `tflm-train convert`, using nothing but the public MicroInterpreter API.
//
//   tflite::MicroMutableOpResolver<tflmt::AllKernels::kCount + 8> resolver;
//   resolver.AddFullyConnected();  resolver.AddSoftmax();   // the model's ops
//   tflmt::RegisterOps(resolver);                           // tflm-train's
//   tflite::MicroInterpreter interpreter(model, resolver, arena, kArenaSize);
//   interpreter.AllocateTensors();
//   tflmt::Trainer trainer(interpreter);
//   if (trainer.Begin() != kTfLiteOk) { /* not a converted model */ }
//   trainer.SetInput(x);  trainer.SetLabel(y);  trainer.TrainStep(0.02f, &loss);
//   trainer.SetInput(x);  trainer.Predict(probabilities);
//
// A converted model's subgraph 0 has the inputs
//   [original inputs..., target, learning_rate, mode, state]
// and the outputs [original outputs..., loss, state] (a `--distill` model
// has its teacher logits just before loss); the state is one uint8
// variable tensor (kernels/training_state.h), so saving it is reading an
// output and loading it is writing an input.
//
// Set the sample (SetInput, and SetLabel/SetTarget when a loss is needed)
// before every TrainStep/EvaluateLoss/Predict: TFLM may reuse an input's
// memory for later tensors once the graph no longer needs it. (The kernels
// may also rewrite the `mode` input to SKIP for a bad sample; Run sets it
// again on every call.)
//
// Guards: a sample whose values hold a NaN or an infinity is not trained on.
// SetInput/SetTarget notice it (before int8 quantization hides it) and
// TrainStep then runs the model with mode SKIP, which counts the sample in
// the state (Counters().skipped_samples); the kernels do the same for float
// inputs, labels outside [0, classes) and a non-finite loss, so firmware that
// writes the tensors itself is guarded too.
//
// Device code: no heap, no exceptions, no RTTI.
#ifndef TFLM_OPS_DEVICE_TRAINER_H_
#define TFLM_OPS_DEVICE_TRAINER_H_

#include <cstddef>
#include <cstdint>

#include "device/episode.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_interpreter.h"

namespace tflmt {

class Trainer {
 public:
  // Only remembers the interpreter: its tensors exist after AllocateTensors.
  explicit Trainer(tflite::MicroInterpreter& interpreter);

  // Checks that the model has a converted model's inputs and outputs. Call
  // once, after interpreter.AllocateTensors(); the other calls fail until it
  // succeeded.
  TfLiteStatus Begin();

  // Values in input 0 / output 0 (all batch rows).
  size_t InputCount() const;
  size_t OutputCount() const;

  // Real values into input 0, quantized for an int8/int16 input.
  TfLiteStatus SetInput(const float* real_values);
  // Input 0's bytes as the tensor holds them (int8 values for an int8
  // model): a sample stored that way, e.g. by tflmt::ReplayBuffer
  // (device/replay.h). `size` must be InputBytes().
  TfLiteStatus SetInputBytes(const void* bytes, size_t size);
  size_t InputBytes() const;
  // Cross-entropy target: the class of a one-sample model.
  TfLiteStatus SetLabel(int32_t label);
  // MSE / binary cross-entropy target: as many values as output 0; for a
  // `--distill` model, the whole row (TargetCount() values, device/distill.h).
  TfLiteStatus SetTarget(const float* values);
  // Values of the target input (1 for a label).
  size_t TargetCount() const;
  // `--distill` model: the row [label, weight, teacher probabilities] from
  // its parts (device/distill.h). SetLabel on such a model writes weight 0:
  // plain cross-entropy, e.g. for the held-out check.
  TfLiteStatus SetDistillTarget(int32_t label, float weight,
                                const float* teacher);
  // `--distill` model: one inference on the sample set before, with the
  // adapter loaded now (the committed one, before an episode), and the
  // teacher's probabilities from the logits the loss reads (the model's
  // output just before `loss`): classes = TargetCount() - 2 floats.
  TfLiteStatus RecordTeacher(float* teacher);

  // One training step on the sample set before; *loss is its loss (before
  // the update). The update itself happens every `--accumulate` steps. A
  // skipped sample (see above) gives kTfLiteOk and *loss NaN.
  TfLiteStatus TrainStep(float learning_rate, float* loss);
  // The loss of the sample set before; nothing changes.
  TfLiteStatus EvaluateLoss(float* loss);
  // Forward pass only; output 0 as real values (OutputCount() floats).
  TfLiteStatus Predict(float* out);

  // What the state's header counts (zero before the first invocation).
  struct Counters {
    uint32_t steps;            // optimizer updates applied
    uint32_t skipped_updates;  // updates dropped: would have been non-finite
    uint32_t skipped_samples;  // samples not trained on (bad values)
    uint32_t rejected_episodes;  // held-out check worse: not committed
    uint32_t rollbacks;          // episodes stopped by divergence
  };
  Counters GetCounters() const;

  // Size of a saved state, in bytes (the same for every state of a model).
  size_t StateBytes() const;
  // Exports the current state to dst: a copy with the LIVE flag cleared and
  // the CRC sealed (the state tensor itself keeps no valid CRC while it
  // trains; kernels/training_state.h). Before the first invocation (and
  // right after Reset) the state is all zero, copied as is, which LoadState
  // accepts as "start from the model's initial adapter".
  TfLiteStatus SaveState(uint8_t* dst, size_t capacity) const;
  // Imports a saved state: resets the interpreter (its other variable
  // tensors too, like tflm_train's TrainableModel.load_state), then writes
  // the state with LIVE cleared. The next invocation verifies it in full
  // and fails with a "TFLMT_STATE: ..." message if it belongs to another
  // model or conversion, is corrupt, or holds non-finite parameters; the
  // interpreter keeps failing until a good state is loaded or Reset() is
  // called.
  TfLiteStatus LoadState(const uint8_t* src, size_t size);
  // Back to the model's initial adapter (TFLM zeroes the state; the next
  // invocation re-initializes it from the model).
  TfLiteStatus Reset();

  // ---- Episodes (device/episode.h) ----
  // True when every value of output 0 sits at an end of its range after the
  // last invocation: int8/int16/uint8 at the type's min or max, a float output
  // within 1e-6 of 0 or 1 (a probability). A whole episode of it is a
  // collapsed adapter.
  bool OutputSaturated() const;
  // Ends a rejected or diverged episode: loads `committed` (a saved state)
  // with the lifetime counters (skipped updates and samples, rejected
  // episodes, rollbacks) carried over from the current state and the one
  // for `verdict` incremented, resealed; the next invocation verifies it as
  // any loaded state. `committed` must hold an invoked model's state (not
  // the all-zero one SaveState returns before the first invocation).
  // Writes into the state tensor only: `committed` is not modified.
  TfLiteStatus Restore(const uint8_t* committed, size_t size,
                       EpisodeVerdict verdict);

 private:
  TfLiteStatus Run(int32_t mode);

  tflite::MicroInterpreter& interpreter_;
  // Roles by position: the converter appends them after the original ones.
  size_t target_ = 0;
  size_t learning_rate_ = 0;
  size_t mode_ = 0;
  size_t state_in_ = 0;
  size_t loss_ = 0;
  size_t state_out_ = 0;
  bool ready_ = false;
  bool distill_ = false;  // the target is a distillation row (device/distill.h)
  // The last SetInput / SetTarget values held a NaN or an infinity.
  bool input_not_finite_ = false;
  bool target_not_finite_ = false;
};

}  // namespace tflmt

#endif  // TFLM_OPS_DEVICE_TRAINER_H_
