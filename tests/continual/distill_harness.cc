// Drives tflmt::TeacherFromOutput and tflmt::PackDistillTarget
// (tflm_ops/device/distill.cc) for tests/test_distill.py, which compares the
// rows with tflm_train.distill's.
//
// stdin: "LOGITS CLASSES SAMPLES WEIGHT", then per sample "LABEL v_1 .. v_C"
// (the model's output). stdout: one target row per sample.
#include <cstdio>

#include "device/distill.h"

int main() {
  int logits = 0, classes = 0, samples = 0;
  float weight = 0.0f;
  if (std::scanf("%d %d %d %f", &logits, &classes, &samples, &weight) != 4 ||
      classes <= 0 || classes > 64) {
    return 2;
  }
  float output[64], teacher[64], row[64 + tflmt::kDistillTargetHeader];
  for (int s = 0; s < samples; ++s) {
    int label = 0;
    if (std::scanf("%d", &label) != 1) return 2;
    for (int c = 0; c < classes; ++c) {
      if (std::scanf("%f", &output[c]) != 1) return 2;
    }
    if (!tflmt::TeacherFromOutput(output, classes, logits != 0, teacher)) {
      return 3;
    }
    tflmt::PackDistillTarget(label, weight, teacher, classes, row);
    for (size_t i = 0; i < classes + tflmt::kDistillTargetHeader; ++i) {
      std::printf(i ? " %.9g" : "%.9g", static_cast<double>(row[i]));
    }
    std::printf("\n");
  }
  return 0;
}
