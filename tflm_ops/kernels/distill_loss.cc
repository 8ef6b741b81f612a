// TFLMT_DISTILL_LOSS: softmax cross-entropy on the label plus distillation
// toward the base model's own (recorded) output, for `convert --distill T`
// (learning without forgetting; the formula is in reference/distill.h).
// Runs when the mode is "train" or "evaluate", like TFLMT_LOSS.
//
// Inputs:  0 logits (float32 / int8 / int16) [batches, classes]
//          1 target float32 [batches, classes + 2]: label, weight, teacher
//            probabilities (a weight of 0 is plain cross-entropy)
//          2 mode
// Outputs: 0 loss (float32 [1]), 1 d loss / d logits (float32)
// Options: version, temperature (float32 > 0).
//
// A target row that cannot be trained on (label outside the classes or not
// an integer, a negative or non-finite weight or probability) or a
// non-finite loss skips the sample in "train" mode (mode rewritten to SKIP,
// as TFLMT_LOSS does) and fails in "evaluate" mode.
#include <cmath>

#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/options.h"
#include "reference/distill.h"

namespace tflmt {
namespace {

constexpr int kLogits = 0;
constexpr int kTarget = 1;
constexpr int kMode = 2;
constexpr int kLoss = 0;
constexpr int kLogitsGrad = 1;

struct OpData {
  float temperature = 1.0f;
  ActivationQuant logits;
  int batches = 0;
  int classes = 0;
};

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(
      context, options, length, kDistillLossOpName,
      kDistillLossOptionsVersion, [](OptionsReader& reader, OpData* data) {
        data->temperature = reader.F32();
        // Finite and positive; tiny values would overflow 1 / T.
        return data->temperature >= 0.01f && data->temperature <= 1000.0f;
      });
}

port::Status Prepare(port::Context* context, port::Node* node) {
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_DISTILL_LOSS: bad options");
  LossTensors tensors;
  TFLMT_ENSURE_OK(PrepareLossTensors(context, node, "TFLMT_DISTILL_LOSS",
                                     &data->logits, &tensors));
  data->classes = tensors.values;
  data->batches = tensors.batches;
  const port::TensorInfo& target = tensors.target;
  TFLMT_ENSURE_MSG(
      target.type == port::DataType::kFloat32 &&
          target.FlatSize() ==
              data->batches * (data->classes + reference::kDistillTargetHeader),
      "TFLMT_DISTILL_LOSS: the target must be float32 [label, weight, "
      "classes probabilities] per sample");
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  int32_t* mode = port::Input(context, node, kMode).As<int32_t>();
  const bool training = *mode == static_cast<int32_t>(Mode::kTrain);
  if (*mode == static_cast<int32_t>(Mode::kInfer)) return port::Status::kOk;
  float* loss = port::Output(context, node, kLoss).As<float>();
  const auto skip = [&]() {
    *mode = static_cast<int32_t>(Mode::kSkip);
    *loss = NAN;
    return port::Status::kOk;
  };
  if (*mode == static_cast<int32_t>(Mode::kSkip)) return skip();

  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const float* target = port::Input(context, node, kTarget).As<float>();
  const int row = data.classes + reference::kDistillTargetHeader;
  for (int b = 0; b < data.batches; ++b) {
    if (!reference::DistillTargetValid(target + b * row, data.classes)) {
      if (training) return skip();
      port::Log("TFLMT_DISTILL_LOSS: target row %d is not [label in [0, %d), "
                "weight >= 0, probabilities >= 0]",
                b, data.classes);
      return port::Status::kError;
    }
  }
  const reference::ValuesRef logits =
      ValuesOf(port::Input(context, node, kLogits), data.logits);
  float* grad = port::Output(context, node, kLogitsGrad).As<float>();
  *loss = reference::DistillationLoss(logits, target, data.batches,
                                      data.classes, data.temperature, grad);
  if (training) {
    if (!std::isfinite(*loss)) return skip();
    for (int i = 0; i < data.batches * data.classes; ++i) {
      if (!std::isfinite(grad[i])) return skip();
    }
  }
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kDistillLossKernel = {kDistillLossOpName, Init, nullptr,
                                            Prepare, Eval, nullptr};

}  // namespace tflmt
