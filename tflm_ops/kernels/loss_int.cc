// TFLMT_LOSS_INT: softmax cross-entropy on int8 logits, in integers
// (integer training, --arithmetic int8): the loss gradient as int16 values
// with a power-of-two exponent (-15: softmax - onehot lies in [-1, 1]), and
// the loss itself written into the model's float32 loss output bit by bit
// (reference/fixed_point.h), so no float arithmetic runs. Modes as TFLMT_LOSS:
// nothing in infer; skip gives a NaN loss; a label outside the classes
// skips the sample in train and is an error in evaluate.
//
// Inputs:  0 logits (int8 [rows, classes]), 1 labels (int32 [rows]), 2 mode,
//          3 exp table (int32 constant [256]: 2^16 exp(-d s_logits))
// Outputs: 0 loss (float32 [1]), 1 gradient (int16, like the logits),
//          2 its exponent (int32 [1])
#include <cstring>

#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "reference/lora_int.h"

namespace tflmt {
namespace {

constexpr int kLogits = 0;
constexpr int kLabels = 1;
constexpr int kMode = 2;
constexpr int kExpTable = 3;
constexpr int kLoss = 0;
constexpr int kGrad = 1;
constexpr int kGradExponent = 2;
constexpr int32_t kLossGradExponent = -15;

struct OpData {
  int rows = 0;
  int classes = 0;
  const int32_t* exp_table = nullptr;
};

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(context, options, length, kLossIntOpName,
                            kLossIntOptionsVersion, [](OptionsReader& r, OpData* d) {
                              d->rows = r.I32();
                              d->classes = r.I32();
                              return d->rows > 0 && d->classes > 0 && d->classes <= 65536;
                            });
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kLossIntOpName;
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 4, 4, 3, 3));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  const int n = data->rows * data->classes;
  port::TensorInfo info;
  TFLMT_ENSURE_OK(RequireInput(context, node, kLogits, op, "logits", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "logits", port::DataType::kInt8, n));
  TFLMT_ENSURE_OK(RequireInput(context, node, kLabels, op, "labels", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "labels", port::DataType::kInt32, data->rows));
  TFLMT_ENSURE_OK(RequireInput(context, node, kExpTable, op, "exp table", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "exp table", port::DataType::kInt32, 256));
  TFLMT_ENSURE_MSG(info.constant_data != nullptr, "%s: exp table must be constant", op);
  data->exp_table = static_cast<const int32_t*>(info.constant_data);
  // The table is a decreasing exponential from 2^16: a softmax sum stays
  // below 2^32 and never is zero.
  TFLMT_ENSURE_MSG(data->exp_table[0] == 65536, "%s: exp table must start at 2^16", op);
  for (int d = 1; d < 256; ++d) {
    TFLMT_ENSURE_MSG(data->exp_table[d] >= 0 && data->exp_table[d] <= data->exp_table[d - 1],
                     "%s: exp table must decrease", op);
  }
  TFLMT_ENSURE_OK(RequireOutput(context, node, kLoss, op, "loss", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "loss", port::DataType::kFloat32, 1));
  TFLMT_ENSURE_OK(RequireOutput(context, node, kGrad, op, "gradient", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "gradient", port::DataType::kInt16, n));
  TFLMT_ENSURE_OK(RequireOutput(context, node, kGradExponent, op, "gradient exponent", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "gradient exponent", port::DataType::kInt32, 1));
  return port::Status::kOk;
}

void StoreLoss(const port::TensorView& loss, uint32_t bits) {
  std::memcpy(loss.data, &bits, 4);
}

port::Status Eval(port::Context* context, port::Node* node) {
  int32_t* mode = port::Input(context, node, kMode).As<int32_t>();
  if (*mode == static_cast<int32_t>(Mode::kInfer)) return port::Status::kOk;
  const port::TensorView loss = port::Output(context, node, kLoss);
  if (*mode == static_cast<int32_t>(Mode::kSkip)) {
    StoreLoss(loss, reference::kFloatQuietNan);
    return port::Status::kOk;
  }
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  const int32_t* labels = port::Input(context, node, kLabels).As<int32_t>();
  for (int row = 0; row < data.rows; ++row) {
    if (labels[row] < 0 || labels[row] >= data.classes) {
      if (*mode == static_cast<int32_t>(Mode::kTrain)) {
        *mode = static_cast<int32_t>(Mode::kSkip);
        StoreLoss(loss, reference::kFloatQuietNan);
        return port::Status::kOk;
      }
      port::Log("%s: label %d is outside [0, %d)", kLossIntOpName,
                static_cast<int>(labels[row]), data.classes);
      return port::Status::kError;
    }
  }
  uint32_t loss_q16 = 0;
  reference::SoftmaxCrossEntropyInt(port::Input(context, node, kLogits).As<int8_t>(), labels,
                                    data.rows, data.classes, data.exp_table,
                                    port::Output(context, node, kGrad).As<int16_t>(), &loss_q16);
  *port::Output(context, node, kGradExponent).As<int32_t>() = kLossGradExponent;
  StoreLoss(loss, reference::FloatBitsFromQ16(loss_q16));
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kLossIntKernel = {kLossIntOpName, Init, nullptr, Prepare, Eval, nullptr};

}  // namespace tflmt
