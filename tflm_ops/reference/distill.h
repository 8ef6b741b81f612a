// Distillation loss (learning without forgetting): cross-entropy on the
// sample's label plus a pull toward the frozen base model's own output
// distribution on the same sample, softened by a temperature T.
//
// One sample's target is a float32 row [label, weight, p_1 .. p_C]: the class
// (an integer in a float), the distillation weight lambda >= 0, and the
// teacher's probabilities p (the model's output with the committed adapter,
// recorded before training; tflmt::TeacherFromOutput in device/distill.h).
// With z the logits, s = softmax(z), s_T = softmax(z / T) and the softened
// teacher q_T = p^(1/T) / sum(p^(1/T)) (= softmax(z_teacher / T) when
// p = softmax(z_teacher)):
//   loss = -log s[label] + lambda T^2 KL(q_T || s_T)
//   d loss / d z = s - onehot(label) + lambda T (s_T - q_T)
// (the T^2 keeps the soft term's gradient on the scale of the hard one,
// as in Hinton et al., 2015). Averaged over the batch, as the plain loss.
#ifndef TFLM_OPS_REFERENCE_DISTILL_H_
#define TFLM_OPS_REFERENCE_DISTILL_H_

#include <cmath>

#include "reference/fully_connected.h"
#include "reference/math.h"

namespace tflmt {
namespace reference {

// Values in front of the teacher's probabilities in a target row.
constexpr int kDistillTargetHeader = 2;

// Whether row `t` (classes + 2 floats) can be trained on: an integral label
// in [0, classes), a finite weight >= 0 and, when the weight is not 0,
// finite probabilities >= 0 with a positive sum.
inline bool DistillTargetValid(const float* t, int classes) {
  const float label = t[0];
  if (!(label >= 0.0f && label < static_cast<float>(classes)) ||
      label != static_cast<float>(static_cast<int>(label))) {
    return false;
  }
  const float weight = t[1];
  if (!(weight >= 0.0f && std::isfinite(weight))) return false;
  if (weight == 0.0f) return true;
  float sum = 0.0f;
  for (int c = 0; c < classes; ++c) {
    const float p = t[kDistillTargetHeader + c];
    if (!(p >= 0.0f && std::isfinite(p))) return false;
    sum += p;
  }
  return sum > 0.0f;
}

// The loss above for rows [batches, classes] of logits and [batches,
// classes + 2] of targets (each checked with DistillTargetValid first);
// writes d loss / d logits into grad. No scratch memory: two passes per row.
inline float DistillationLoss(const ValuesRef& logits, const float* targets,
                              int batches, int classes, float temperature,
                              float* grad) {
  const float inv_t = 1.0f / temperature;
  float total = 0.0f;
  for (int b = 0; b < batches; ++b) {
    const ValuesRef z = logits.Offset(b * classes);
    const float* t = targets + b * (classes + kDistillTargetHeader);
    const float* p = t + kDistillTargetHeader;
    const int label = static_cast<int>(t[0]);
    const float weight = t[1];
    float* g = grad + b * classes;
    // Pass 1: the normalizers of s, s_T and q_T.
    float max_logit = z[0];
    for (int c = 1; c < classes; ++c) max_logit = z[c] > max_logit ? z[c] : max_logit;
    float sum = 0.0f, sum_t = 0.0f, sum_q = 0.0f;
    for (int c = 0; c < classes; ++c) {
      sum += Exp(z[c] - max_logit);
      sum_t += Exp((z[c] - max_logit) * inv_t);
      // p^(1/T) as exp(log(p) / T); a zero probability stays zero.
      if (weight != 0.0f && p[c] > 0.0f) sum_q += Exp(Log(p[c]) * inv_t);
    }
    const float log_sum = Log(sum), log_sum_t = Log(sum_t);
    const float log_sum_q = sum_q > 0.0f ? Log(sum_q) : 0.0f;
    float loss = log_sum + max_logit - z[label];
    // Pass 2: the gradient, and KL(q_T || s_T) = sum q (log q - log s_T).
    float kl = 0.0f;
    for (int c = 0; c < classes; ++c) {
      // As TFLMT_LOSS computes it, so weight 0 gives its exact bytes.
      float dz = Exp(z[c] - max_logit) / sum - (c == label ? 1.0f : 0.0f);
      if (weight != 0.0f) {
        const float log_s_t = (z[c] - max_logit) * inv_t - log_sum_t;
        float q = 0.0f;
        if (p[c] > 0.0f) {
          const float log_q = Log(p[c]) * inv_t - log_sum_q;
          q = Exp(log_q);
          kl += q * (log_q - log_s_t);
        }
        dz += weight * temperature * (Exp(log_s_t) - q);
      }
      g[c] = dz / batches;
    }
    if (weight != 0.0f) loss += weight * temperature * temperature * kl;
    total += loss;
  }
  return total / batches;
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_DISTILL_H_
