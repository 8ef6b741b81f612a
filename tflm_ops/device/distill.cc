#include "device/distill.h"

#include <cmath>

#include "reference/math.h"  // the kernels' Exp: the same floats on every core

namespace tflmt {

bool TeacherFromOutput(const float* output, size_t classes,
                       bool output_is_logits, float* teacher) {
  if (classes == 0) return false;
  float sum = 0.0f;
  if (output_is_logits) {
    float max_logit = output[0];
    for (size_t c = 0; c < classes; ++c) {
      if (!std::isfinite(output[c])) return false;
      if (output[c] > max_logit) max_logit = output[c];
    }
    for (size_t c = 0; c < classes; ++c) {
      teacher[c] = reference::Exp(output[c] - max_logit);
      sum += teacher[c];
    }
  } else {
    for (size_t c = 0; c < classes; ++c) {
      if (!std::isfinite(output[c])) return false;
      teacher[c] = output[c] > 0.0f ? output[c] : 0.0f;
      sum += teacher[c];
    }
  }
  if (!(sum > 0.0f)) return false;
  for (size_t c = 0; c < classes; ++c) teacher[c] /= sum;
  return true;
}

void PackDistillTarget(int label, float weight, const float* teacher,
                       size_t classes, float* row) {
  row[0] = static_cast<float>(label);
  row[1] = weight;
  for (size_t c = 0; c < classes; ++c) {
    row[kDistillTargetHeader + c] = teacher[c];
  }
}

}  // namespace tflmt
