// tflmt::LearnRepeat: "the wake word was missed, the user repeats it while
// holding a button" on the device. The repeat is already in a FeatureRing
// (device/wake_word_buffer.h); this replays the held invocations through the
// model, oldest first, one invocation each, in training mode where
// RepeatLabels gave a label (1 in the positive window after the word, 0
// where the firmware says there was none) and in inference mode elsewhere, so
// the model's streaming buffers advance exactly as they did live. Then the
// adapter is saved.
//
//   int8_t labels[kRingInvocations];
//   tflmt::RepeatConfig config;                  // lr, epochs, weights
//   tflmt::RepeatResult result;
//   if (tflmt::LearnRepeat(trainer, ring, press, release, config, labels,
//                          sizeof(labels), state, sizeof(state), &result)
//       == kTfLiteOk) {
//     store.Commit(state, trainer.StateBytes(), sequence);   // AdapterStore
//   }
//
// Stream: the model's buffers are not reset (the public interpreter API
// resets them only together with the adapter); the invocations replayed
// before the press overwrite them instead. Keep at least the model's
// receptive field (hey_jarvis: about 1.5 s, 50 invocations) in the ring
// before the press. After the last epoch the buffers hold the newest held
// audio, which is what the live stream holds too.
//
// Class weights: a positive invocation's step uses learning_rate *
// positive_weight (for SGD the same update as a loss weighted by it). A model
// converted with `--pos-weight` weights inside its loss op already: leave
// these at 1 for it.
//
// Device code: no heap, no exceptions, no RTTI; all memory from the caller.
#ifndef TFLM_OPS_DEVICE_WAKE_WORD_TRAINER_H_
#define TFLM_OPS_DEVICE_WAKE_WORD_TRAINER_H_

#include <cstddef>
#include <cstdint>

#include "device/trainer.h"
#include "device/wake_word_buffer.h"

namespace tflmt {

struct RepeatConfig {
  RepeatLabelConfig labels;
  float learning_rate = 0.01f;
  float positive_weight = 1.0f;
  float negative_weight = 1.0f;
  uint32_t epochs = 3;  // replays of the ring
};

struct RepeatResult {
  RepeatLabelResult labels;
  uint32_t steps = 0;              // training invocations run
  uint32_t inferences = 0;         // unlabelled invocations run
  float first_positive_loss = 0;   // mean loss on the positives, epoch 1
  float last_positive_loss = 0;    // ... in the last epoch
};

// Labels the repeat (RepeatLabels into labels[0, labels_size)), replays the
// ring config.epochs times, then saves the state into state_out (capacity
// at least trainer.StateBytes()). kTfLiteError, with nothing trained, when
// the labels cannot be made (see RepeatLabels), the ring's invocations are
// not the model's input size, or the model's target is not one float (a
// binary-cross-entropy wake-word output); an error of the interpreter during
// the replay is returned as is (the adapter may then hold part of it: load
// the saved state back).
TfLiteStatus LearnRepeat(Trainer& trainer, const FeatureRing& ring,
                         uint32_t press, uint32_t release,
                         const RepeatConfig& config, int8_t* labels,
                         size_t labels_size, uint8_t* state_out,
                         size_t state_capacity, RepeatResult* result);

}  // namespace tflmt

#endif  // TFLM_OPS_DEVICE_WAKE_WORD_TRAINER_H_
