// Distillation targets for a model converted with `tflm-train convert
// --distill T` (learning without forgetting; kernels/distill_loss.cc).
//
// Before an episode, the firmware records the teacher for each new sample:
// the softmax of the logits the loss reads, with the committed adapter
// loaded (Trainer::RecordTeacher: one inference, which reads the model's
// `teacher_logits` output and calls TeacherFromOutput), kept next to the
// sample (4 B per class). Each training step then sets the target row
// [label, weight, teacher...] (Trainer::SetDistillTarget, which calls
// PackDistillTarget):
//
//   float teacher[kSamples][kClasses];          // kClasses = TargetCount() - 2
//   for (i...) { trainer.SetInput(x[i]); trainer.RecordTeacher(teacher[i]); }
//   for (i...) { trainer.SetInput(x[i]);
//                trainer.SetDistillTarget(label[i], 0.25f, teacher[i]);
//                trainer.TrainStep(lr, &loss); }
//
// The temperature is the model's (an option of its loss op): the kernel
// softens the recorded probabilities itself, so they are stored at T = 1.
// Device code: no heap, no TFLM headers (tflm_train/distill.py is the same
// on the host; tests/test_distill.py compares the two).
#ifndef TFLM_OPS_DEVICE_DISTILL_H_
#define TFLM_OPS_DEVICE_DISTILL_H_

#include <cstddef>

namespace tflmt {

// Values in front of the probabilities in a target row (label, weight).
constexpr size_t kDistillTargetHeader = 2;

// The teacher's probabilities from a model output of `classes` real values:
// a probability output (the model ends in SOFTMAX; quantization may leave
// the sum a little off 1) is clamped at 0 and renormalized; a logits output
// (`output_is_logits`) goes through a softmax. False when nothing sums to a
// positive value or a value is not finite (then `teacher` is unspecified).
bool TeacherFromOutput(const float* output, size_t classes,
                       bool output_is_logits, float* teacher);

// Writes the target row [label, weight, teacher[0..classes)] into `row`
// (classes + 2 floats). A weight of 0 makes the step plain cross-entropy.
void PackDistillTarget(int label, float weight, const float* teacher,
                       size_t classes, float* row);

}  // namespace tflmt

#endif  // TFLM_OPS_DEVICE_DISTILL_H_
