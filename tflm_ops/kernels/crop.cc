// TFLMT_CROP: backward pass of PAD and CONCATENATION, the part of dy an input
// produced: dst = src[begin : begin + dst shape]. The shapes come from the
// options. Runs only when the mode is "train".
//
// Inputs:  0 src (dy, float32), 1 mode
// Outputs: 0 the crop (float32)
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "reference/broadcast.h"

namespace tflmt {
namespace {

constexpr int kSource = 0;
constexpr int kMode = 1;
constexpr int kCrop = 0;

struct OpData {
  reference::Dims src;
  reference::Dims dst;
  int begin[reference::kMaxDims] = {};
};

bool ParseOptions(OptionsReader& reader, OpData* data) {
  const int rank = reader.U8();
  bool ok = ReadDims(reader, rank, &data->src);
  for (int i = 0; i < reference::kMaxDims; ++i) data->begin[i] = reader.I32();
  ok = ReadDims(reader, rank, &data->dst) && ok;
  for (int i = 0; i < rank && ok; ++i) {
    ok = data->begin[i] >= 0 && data->begin[i] + data->dst.d[i] <= data->src.d[i];
  }
  return ok;
}

void* Init(port::Context* context, const char* options, size_t length) {
  return InitOpData<OpData>(context, options, length, kCropOpName,
                            kCropOptionsVersion, ParseOptions);
}

port::Status Prepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kCropOpName;
  const OpData* data = static_cast<const OpData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  TFLMT_ENSURE_OK(CheckArity(node, op, 2, 2, 1, 1));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  TFLMT_ENSURE_OK(RequireFloatInput(context, node, kSource, op, "dy",
                                    data->src.Size()));
  return RequireFloatOutput(context, node, kCrop, op, "crop", data->dst.Size());
}

port::Status Eval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const OpData& data = *static_cast<const OpData*>(port::UserData(node));
  reference::Crop(port::Input(context, node, kSource).As<float>(), data.src,
                  data.begin, data.dst,
                  port::Output(context, node, kCrop).As<float>());
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kCropKernel = {kCropOpName, Init, nullptr,
                                     Prepare, Eval, nullptr};

}  // namespace tflmt
