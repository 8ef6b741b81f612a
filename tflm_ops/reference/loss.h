// Losses and their gradient with respect to the prediction, for one batch.
// Each returns the loss averaged the way Keras averages it (over the batch,
// and for MSE/BCE over the values of a sample too) and writes d loss / d pred.
#ifndef TFLM_OPS_REFERENCE_LOSS_H_
#define TFLM_OPS_REFERENCE_LOSS_H_

#include <cmath>
#include <cstdint>

#include "reference/fully_connected.h"
#include "reference/math.h"

namespace tflmt {
namespace reference {

// Sparse softmax cross-entropy on logits [batches, classes]:
//   loss = mean_b( logsumexp(z_b) - z_b[label_b] )
//   grad = (softmax(z_b) - onehot(label_b)) / batches
inline float SoftmaxCrossEntropy(const ValuesRef& logits, const int32_t* labels,
                                 int batches, int classes, float* grad) {
  float total = 0.0f;
  for (int b = 0; b < batches; ++b) {
    const ValuesRef z = logits.Offset(b * classes);
    float* g = grad + b * classes;
    float max_logit = z[0];
    for (int c = 1; c < classes; ++c) max_logit = z[c] > max_logit ? z[c] : max_logit;
    float sum = 0.0f;
    for (int c = 0; c < classes; ++c) {
      g[c] = Exp(z[c] - max_logit);
      sum += g[c];
    }
    total += Log(sum) + max_logit - z[labels[b]];
    for (int c = 0; c < classes; ++c) {
      g[c] = (g[c] / sum - (c == labels[b] ? 1.0f : 0.0f)) / batches;
    }
  }
  return total / batches;
}

// Mean squared error over all n values: mean((p - t)^2), grad 2 (p - t) / n.
inline float MeanSquaredError(const ValuesRef& prediction, const float* target,
                              int n, float* grad) {
  float total = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float d = prediction[i] - target[i];
    total += d * d;
    grad[i] = 2.0f * d / n;
  }
  return total / n;
}

// Binary cross-entropy on logits, over all n values (targets in [0, 1]):
//   loss = mean( max(z, 0) - z t + log(1 + exp(-|z|)) ),  grad (sigmoid(z) - t) / n
inline float BinaryCrossEntropy(const ValuesRef& logits, const float* target, int n,
                                float* grad) {
  float total = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float z = logits[i];
    const float t = target[i];
    total += (z > 0.0f ? z : 0.0f) - z * t + Log1p(Exp(-std::fabs(z)));
    const float sigmoid = Logistic(z);
    grad[i] = (sigmoid - t) / n;
  }
  return total / n;
}

// Binary cross-entropy with class weights (pos on the target's share, neg on
// the rest), over all n values:
//   loss = mean( pos t softplus(-z) + neg (1 - t) softplus(z) )
//   grad = (neg (1 - t) sigmoid(z) - pos t (1 - sigmoid(z))) / n
// pos = neg = 1 is BinaryCrossEntropy. For a wake word the few positive
// invocations of a clip face thousands of negative ones: pos > neg evens them.
inline float WeightedBinaryCrossEntropy(const ValuesRef& logits, const float* target,
                                        int n, float pos_weight, float neg_weight,
                                        float* grad) {
  float total = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float z = logits[i];
    const float t = target[i];
    const float tail = Log1p(Exp(-std::fabs(z)));
    const float softplus_z = (z > 0.0f ? z : 0.0f) + tail;    // -log(1 - sigmoid(z))
    const float softplus_neg_z = (z < 0.0f ? -z : 0.0f) + tail;  // -log(sigmoid(z))
    total += pos_weight * t * softplus_neg_z + neg_weight * (1.0f - t) * softplus_z;
    const float sigmoid = Logistic(z);
    grad[i] = (neg_weight * (1.0f - t) * sigmoid - pos_weight * t * (1.0f - sigmoid)) / n;
  }
  return total / n;
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_LOSS_H_
