// TFLMT_MEAN_GRAD: backward pass of MEAN, dy spread evenly over the reduced
// axes. The shapes come from the options, so no activation is kept alive for
// it. Runs only when the mode is "train".
//
// Inputs:  0 dy (float32), 1 mode
// Outputs: 0 dx (float32)
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "reference/broadcast.h"

namespace tflmt {
namespace {

constexpr int kOutputGrad = 0;
constexpr int kMode = 1;
constexpr int kInputGrad = 0;

struct OpData {
  reference::Dims in;
  reference::Dims reduced;  // in, with the reduced axes set to 1
};

bool ParseOptions(OptionsReader& reader, OpData* data) {
  const int rank = reader.U8();
  const uint8_t axes = reader.U8();  // bit i: axis i is reduced
  const bool ok = ReadDims(reader, rank, &data->in);
  data->reduced = data->in;
  for (int i = 0; i < rank && i < reference::kMaxDims; ++i) {
    if (axes & (1u << i)) data->reduced.d[i] = 1;
  }
  return ok;
}

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(context, options, length, kMeanGradOpName,
                            kMeanGradOptionsVersion, ParseOptions);
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kMeanGradOpName;
  const OpData* data = static_cast<const OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 2, 2, 1, 1));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  TFLMT_ENSURE_OK(RequireFloatInput(context, node, kOutputGrad, op, "dy",
                                    data->reduced.Size()));
  return RequireFloatOutput(context, node, kInputGrad, op, "dx", data->in.Size());
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  reference::MeanGrad(port::Input(context, node, kOutputGrad).As<float>(),
                      data.in, data.reduced,
                      port::Output(context, node, kInputGrad).As<float>());
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kMeanGradKernel = {kMeanGradOpName, Init, nullptr,
                                         Prepare, Eval, nullptr};

}  // namespace tflmt
