#include "device/wake_word_trainer.h"

namespace tflmt {

TfLiteStatus LearnRepeat(Trainer& trainer, const FeatureRing& ring,
                         uint32_t press, uint32_t release,
                         const RepeatConfig& config, int8_t* labels,
                         size_t labels_size, uint8_t* state_out,
                         size_t state_capacity, RepeatResult* result) {
  RepeatResult out;
  if (result != nullptr) *result = out;
  if (ring.InvocationBytes() != trainer.InputBytes() ||
      trainer.OutputCount() != 1 || state_out == nullptr ||
      state_capacity < trainer.StateBytes() || config.epochs == 0) {
    return kTfLiteError;
  }
  if (!RepeatLabels(ring, press, release, config.labels, labels, labels_size,
                    &out.labels)) {
    if (result != nullptr) *result = out;
    return kTfLiteError;
  }
  float prediction = 0.0f;  // Predict's output; only the stream matters here
  for (uint32_t epoch = 0; epoch < config.epochs; ++epoch) {
    float positive_loss = 0.0f;
    for (size_t i = 0; i < ring.Count(); ++i) {
      TfLiteStatus status =
          trainer.SetInputBytes(ring.Get(i), ring.InvocationBytes());
      if (status != kTfLiteOk) return status;
      if (labels[i] == kIgnoreLabel) {
        status = trainer.Predict(&prediction);
        ++out.inferences;
      } else {
        const float target = labels[i] == 1 ? 1.0f : 0.0f;
        const float weight =
            labels[i] == 1 ? config.positive_weight : config.negative_weight;
        float loss = 0.0f;
        status = trainer.SetTarget(&target);
        if (status == kTfLiteOk) {
          status = trainer.TrainStep(config.learning_rate * weight, &loss);
        }
        ++out.steps;
        if (labels[i] == 1) positive_loss += loss;
      }
      if (status != kTfLiteOk) {
        if (result != nullptr) *result = out;
        return status;
      }
    }
    positive_loss /= static_cast<float>(out.labels.positives);
    if (epoch == 0) out.first_positive_loss = positive_loss;
    out.last_positive_loss = positive_loss;
  }
  if (result != nullptr) *result = out;
  return trainer.SaveState(state_out, state_capacity);
}

}  // namespace tflmt
