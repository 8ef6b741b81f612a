// TFLMT_LOSS: the training loss of one sample (or batch) and its gradient.
//
//   kind 0  sparse softmax cross-entropy on logits; target int32 labels
//   kind 1  mean squared error; target float32 shaped like the prediction
//   kind 2  binary cross-entropy on logits; target float32 in [0, 1]
//
// Options version 2 (kLossWeightedVersion) appends two float32 class weights,
// positive then negative, for binary cross-entropy: the loss and gradient of
// the positive share of a target are scaled by the first, the rest by the
// second (reference::WeightedBinaryCrossEntropy).
//
// The converter feeds cross-entropy the logits before a final SOFTMAX (and
// binary cross-entropy those before a final LOGISTIC), which is both stable
// and exact even when the model's quantized output rounds a probability to 0.
// Runs when the mode is "train" or "evaluate".
//
// In "train" mode a sample that cannot be trained on - a label outside
// [0, classes), a non-finite float target, or a loss or gradient that is not
// finite - is skipped, not failed: this op rewrites the mode tensor to SKIP,
// so the backward ops (which read the same tensor) do nothing and the
// optimizer counts the sample as skipped. In "skip" mode the loss is NaN.
//
// Inputs:  0 prediction (float32 / int8 / int16), 1 target, 2 mode
// Outputs: 0 loss (float32 [1]), 1 d loss / d prediction (float32)
#include <cmath>
#include <new>

#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/options.h"
#include "reference/loss.h"

namespace tflmt {
namespace {

constexpr int kPrediction = 0;
constexpr int kTarget = 1;
constexpr int kMode = 2;
constexpr int kLoss = 0;
constexpr int kPredictionGrad = 1;

struct OpData {
  LossKind kind = LossKind::kSoftmaxCrossEntropy;
  ActivationQuant prediction;
  int batches = 0;
  int values = 0;  // per sample (classes for cross-entropy)
  bool weighted = false;  // class weights (options version 2)
  float pos_weight = 1.0f;
  float neg_weight = 1.0f;
};

void* Init(port::Context* context, const char* options, size_t length) {
  const bool weighted = options != nullptr && length > 0 &&
                        static_cast<uint8_t>(options[0]) == kLossWeightedVersion;
  return InitOpData<OpData>(
      context, options, length, kLossOpName,
      weighted ? kLossWeightedVersion : kLossOptionsVersion,
      [weighted](OptionsReader& reader, OpData* data) {
        const uint8_t kind = reader.U8();
        data->kind = static_cast<LossKind>(kind);
        if (weighted) {
          data->weighted = true;
          data->pos_weight = reader.F32();
          data->neg_weight = reader.F32();
          // Weights belong to binary cross-entropy and are finite, >= 0.
          if (data->kind != LossKind::kBinaryCrossEntropy ||
              !std::isfinite(data->pos_weight) || data->pos_weight < 0.0f ||
              !std::isfinite(data->neg_weight) || data->neg_weight < 0.0f) {
            return false;
          }
        }
        return kind <= static_cast<uint8_t>(LossKind::kBinaryCrossEntropy);
      });
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_LOSS: bad options");
  LossTensors tensors;
  TFLMT_ENSURE_OK(PrepareLossTensors(context, node, "TFLMT_LOSS",
                                     &data->prediction, &tensors));
  data->values = tensors.values;
  data->batches = tensors.batches;
  const port::TensorInfo& target = tensors.target;
  if (data->kind == LossKind::kSoftmaxCrossEntropy) {
    TFLMT_ENSURE_MSG(target.type == port::DataType::kInt32 &&
                         target.FlatSize() == data->batches,
                     "TFLMT_LOSS: cross-entropy takes one int32 label per "
                     "sample");
  } else {
    TFLMT_ENSURE_MSG(target.type == port::DataType::kFloat32 &&
                         target.FlatSize() == tensors.prediction.FlatSize(),
                     "TFLMT_LOSS: the target must be float32 shaped like the "
                     "prediction");
  }
  return port::Status::kOk;
}

// The index of the first label outside [0, classes), or -1.
int BadLabel(const int32_t* labels, int batches, int classes) {
  for (int b = 0; b < batches; ++b) {
    if (labels[b] < 0 || labels[b] >= classes) return b;
  }
  return -1;
}

bool AllFinite(const float* values, int n) {
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) return false;
  }
  return true;
}

port::Status Eval(port::Context* context, port::Node* node) {
  int32_t* mode = port::Input(context, node, kMode).As<int32_t>();
  const bool training = *mode == static_cast<int32_t>(Mode::kTrain);
  if (*mode == static_cast<int32_t>(Mode::kInfer)) return port::Status::kOk;
  float* loss = port::Output(context, node, kLoss).As<float>();
  // A sample that is not trained on has no loss.
  const auto skip = [&]() {
    *mode = static_cast<int32_t>(Mode::kSkip);
    *loss = NAN;
    return port::Status::kOk;
  };
  if (*mode == static_cast<int32_t>(Mode::kSkip)) return skip();

  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const int n = data.batches * data.values;
  const reference::ValuesRef prediction =
      ValuesOf(port::Input(context, node, kPrediction), data.prediction);
  const port::TensorView target = port::Input(context, node, kTarget);
  float* grad = port::Output(context, node, kPredictionGrad).As<float>();
  switch (data.kind) {
    case LossKind::kSoftmaxCrossEntropy: {
      const int32_t* labels = target.As<int32_t>();
      const int bad = BadLabel(labels, data.batches, data.values);
      if (bad >= 0) {
        if (training) return skip();
        port::Log("TFLMT_LOSS: label %d is outside [0, %d)",
                  static_cast<int>(labels[bad]), data.values);
        return port::Status::kError;
      }
      *loss = reference::SoftmaxCrossEntropy(prediction, labels, data.batches,
                                             data.values, grad);
      break;
    }
    case LossKind::kMeanSquaredError:
      if (training && !AllFinite(target.As<float>(), n)) return skip();
      *loss = reference::MeanSquaredError(prediction, target.As<float>(), n,
                                          grad);
      break;
    case LossKind::kBinaryCrossEntropy:
      if (training && !AllFinite(target.As<float>(), n)) return skip();
      *loss = data.weighted
                  ? reference::WeightedBinaryCrossEntropy(
                        prediction, target.As<float>(), n, data.pos_weight,
                        data.neg_weight, grad)
                  : reference::BinaryCrossEntropy(prediction,
                                                  target.As<float>(), n, grad);
      break;
  }
  if (training && (!std::isfinite(*loss) || !AllFinite(grad, n))) {
    return skip();
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kLossKernel = {kLossOpName, Init, nullptr,
                               Prepare, Eval, nullptr};

}  // namespace tflmt
