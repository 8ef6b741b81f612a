// TFLMT_BROADCAST_GRAD: gradient of one operand of a broadcasting ADD, SUB
// or MUL: dy (* the other operand, for MUL; negated for SUB's second operand)
// summed over the axes the operand was broadcast along. The shapes come from
// the options. Runs only when the mode is "train".
//
// Inputs:  0 dy (float32), 1 the other operand (MUL) or -1, 2 mode
// Outputs: 0 dx of this operand (float32)
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "reference/broadcast.h"

namespace tflmt {
namespace {

constexpr int kOutputGrad = 0;
constexpr int kOther = 1;
constexpr int kMode = 2;
constexpr int kInputGrad = 0;

struct OpData {
  reference::Dims out;
  reference::Dims in;
  reference::Dims other;
  float sign = 1.0f;
  bool multiply = false;
  ActivationQuant other_quant;
};

bool ParseOptions(OptionsReader& reader, OpData* data) {
  const uint8_t kind = reader.U8();
  const int rank = reader.U8();
  bool ok = ReadDims(reader, rank, &data->out);
  ok = ReadDims(reader, rank, &data->in) && ok;
  ok = ReadDims(reader, rank, &data->other) && ok;
  for (int i = 0; i < rank && ok; ++i) {
    ok = (data->in.d[i] == data->out.d[i] || data->in.d[i] == 1) &&
         (data->other.d[i] == data->out.d[i] || data->other.d[i] == 1);
  }
  data->sign = kind == static_cast<uint8_t>(BroadcastKind::kSubtract) ? -1.0f : 1.0f;
  data->multiply = kind == static_cast<uint8_t>(BroadcastKind::kMultiply);
  return ok && kind <= static_cast<uint8_t>(BroadcastKind::kMultiply);
}

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(context, options, length, kBroadcastGradOpName,
                            kBroadcastGradOptionsVersion, ParseOptions);
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kBroadcastGradOpName;
  OpData* data = static_cast<OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 3, 3, 1, 1));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  TFLMT_ENSURE_OK(RequireFloatInput(context, node, kOutputGrad, op, "dy",
                                    data->out.Size()));
  TFLMT_ENSURE_OK(RequireFloatOutput(context, node, kInputGrad, op, "dx",
                                     data->in.Size()));
  if (data->multiply) {
    port::TensorInfo other;
    TFLMT_ENSURE_OK(RequireInput(context, node, kOther, op, "other operand", &other));
    TFLMT_ENSURE_MSG(other.FlatSize() == data->other.Size(),
                     "%s: the other operand must hold %d values", op,
                     data->other.Size());
    TFLMT_ENSURE_OK(ActivationQuantOf(other, op, "the other operand",
                                      &data->other_quant));
  }
  return port::Status::kOk;
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  reference::ValuesRef other;
  if (data.multiply) {
    other = ValuesOf(port::Input(context, node, kOther), data.other_quant);
  }
  reference::BroadcastGrad(port::Input(context, node, kOutputGrad).As<float>(),
                           data.out, data.in, data.multiply, other, data.other,
                           data.sign,
                           port::Output(context, node, kInputGrad).As<float>());
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kBroadcastGradKernel = {kBroadcastGradOpName, Init,
                                              nullptr, Prepare, Eval, nullptr};

}  // namespace tflmt
