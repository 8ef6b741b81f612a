// Gradients of ops that only move or combine values, all described by their
// shapes in the options (so no activation is kept alive for them):
//   TFLMT_MEAN_GRAD    MEAN: dy spread evenly over the reduced axes
//   TFLMT_CROP         PAD, CONCATENATION: the part of dy an input produced
//   TFLMT_BROADCAST_GRAD  ADD / SUB / MUL operand: dy (* the other operand)
//                      summed over the axes the operand was broadcast along
// Each runs only when the mode is "train".
#include <new>

#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "kernels/options.h"
#include "reference/broadcast.h"

namespace tflmt {
namespace {

bool ReadDims(OptionsReader& reader, int rank, reference::Dims* dims) {
  dims->rank = rank;
  bool ok = rank >= 1 && rank <= reference::kMaxDims;
  for (int i = 0; i < reference::kMaxDims; ++i) {
    dims->d[i] = reader.I32();
    if (i < rank) {
      ok = ok && dims->d[i] >= 1;
    } else {
      dims->d[i] = 1;
    }
  }
  return ok;
}

port::Status CheckFloat(port::Context* context, const port::Node* node,
                        bool is_input, int index, int values, const char* op) {
  port::TensorInfo info;
  if (is_input) {
    TFLMT_ENSURE_OK(port::InputInfo(context, node, index, &info));
  } else {
    TFLMT_ENSURE_OK(port::OutputInfo(context, node, index, &info));
  }
  TFLMT_ENSURE_MSG(info.type == port::DataType::kFloat32 &&
                       info.FlatSize() == values,
                   "%s: expected float32 with %d values", op, values);
  return port::Status::kOk;
}

// ---- TFLMT_MEAN_GRAD: inputs 0 dy, 1 mode; output 0 dx --------------------------
struct MeanData {
  reference::Dims in;
  reference::Dims reduced;
};

void* MeanInit(port::Context* context, const char* options, size_t length) {
  OptionsReader reader(options, length);
  const bool version_ok = reader.ReadVersion();
  const int rank = reader.U8();
  const uint8_t axes = reader.U8();  // bit i: axis i is reduced
  MeanData parsed;
  const bool dims_ok = ReadDims(reader, rank, &parsed.in);
  if (!version_ok || !reader.Finished() || !dims_ok) {
    port::Log("TFLMT_MEAN_GRAD: bad options");
    return nullptr;
  }
  parsed.reduced = parsed.in;
  for (int i = 0; i < rank; ++i) {
    if (axes & (1u << i)) parsed.reduced.d[i] = 1;
  }
  void* memory = port::AllocatePersistent(context, sizeof(MeanData));
  return memory != nullptr ? new (memory) MeanData(parsed) : nullptr;
}

port::Status MeanPrepare(port::Context* context, port::Node* node) {
  const MeanData* data = static_cast<const MeanData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_MEAN_GRAD: bad options");
  TFLMT_ENSURE(port::NumInputs(node) == 2 && port::NumOutputs(node) == 1);
  TFLMT_ENSURE_OK(CheckFloat(context, node, true, 0, data->reduced.Size(), "TFLMT_MEAN_GRAD"));
  return CheckFloat(context, node, false, 0, data->in.Size(), "TFLMT_MEAN_GRAD");
}

port::Status MeanEval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, 1))) return port::Status::kOk;
  const MeanData& data = *static_cast<const MeanData*>(port::UserData(node));
  reference::MeanGrad(port::Input(context, node, 0).As<float>(), data.in,
                      data.reduced, port::Output(context, node, 0).As<float>());
  return port::Status::kOk;
}

// ---- TFLMT_CROP: inputs 0 src (dy), 1 mode; output 0 the crop -------------------
struct CropData {
  reference::Dims src;
  reference::Dims dst;
  int begin[reference::kMaxDims];
};

void* CropInit(port::Context* context, const char* options, size_t length) {
  OptionsReader reader(options, length);
  const bool version_ok = reader.ReadVersion();
  const int rank = reader.U8();
  CropData parsed;
  bool ok = ReadDims(reader, rank, &parsed.src);
  for (int i = 0; i < reference::kMaxDims; ++i) parsed.begin[i] = reader.I32();
  ok = ReadDims(reader, rank, &parsed.dst) && ok;
  for (int i = 0; i < rank && ok; ++i) {
    ok = parsed.begin[i] >= 0 && parsed.begin[i] + parsed.dst.d[i] <= parsed.src.d[i];
  }
  if (!version_ok || !reader.Finished() || !ok) {
    port::Log("TFLMT_CROP: bad options");
    return nullptr;
  }
  void* memory = port::AllocatePersistent(context, sizeof(CropData));
  return memory != nullptr ? new (memory) CropData(parsed) : nullptr;
}

port::Status CropPrepare(port::Context* context, port::Node* node) {
  const CropData* data = static_cast<const CropData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_CROP: bad options");
  TFLMT_ENSURE(port::NumInputs(node) == 2 && port::NumOutputs(node) == 1);
  TFLMT_ENSURE_OK(CheckFloat(context, node, true, 0, data->src.Size(), "TFLMT_CROP"));
  return CheckFloat(context, node, false, 0, data->dst.Size(), "TFLMT_CROP");
}

port::Status CropEval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, 1))) return port::Status::kOk;
  const CropData& data = *static_cast<const CropData*>(port::UserData(node));
  reference::Crop(port::Input(context, node, 0).As<float>(), data.src,
                  data.begin, data.dst, port::Output(context, node, 0).As<float>());
  return port::Status::kOk;
}

// ---- TFLMT_BROADCAST_GRAD: inputs 0 dy, 1 other operand (MUL) or -1, 2 mode;
// output 0 dx of one operand ------------------------------------------------------
struct BroadcastData {
  reference::Dims out;
  reference::Dims in;
  reference::Dims other;
  float sign = 1.0f;
  bool multiply = false;
  ActivationQuant other_quant;
};

void* BroadcastInit(port::Context* context, const char* options, size_t length) {
  OptionsReader reader(options, length);
  const bool version_ok = reader.ReadVersion();
  const uint8_t kind = reader.U8();  // 0 add, 1 subtract (second operand), 2 multiply
  const int rank = reader.U8();
  BroadcastData parsed;
  bool ok = ReadDims(reader, rank, &parsed.out);
  ok = ReadDims(reader, rank, &parsed.in) && ok;
  ok = ReadDims(reader, rank, &parsed.other) && ok;
  for (int i = 0; i < rank && ok; ++i) {
    ok = (parsed.in.d[i] == parsed.out.d[i] || parsed.in.d[i] == 1) &&
         (parsed.other.d[i] == parsed.out.d[i] || parsed.other.d[i] == 1);
  }
  if (!version_ok || !reader.Finished() || !ok || kind > 2) {
    port::Log("TFLMT_BROADCAST_GRAD: bad options");
    return nullptr;
  }
  parsed.sign = kind == 1 ? -1.0f : 1.0f;
  parsed.multiply = kind == 2;
  void* memory = port::AllocatePersistent(context, sizeof(BroadcastData));
  return memory != nullptr ? new (memory) BroadcastData(parsed) : nullptr;
}

port::Status BroadcastPrepare(port::Context* context, port::Node* node) {
  BroadcastData* data = static_cast<BroadcastData*>(port::UserData(node));
  TFLMT_ENSURE_MSG(data != nullptr, "TFLMT_BROADCAST_GRAD: bad options");
  TFLMT_ENSURE(port::NumInputs(node) == 3 && port::NumOutputs(node) == 1);
  TFLMT_ENSURE_OK(CheckFloat(context, node, true, 0, data->out.Size(), "TFLMT_BROADCAST_GRAD"));
  TFLMT_ENSURE_OK(CheckFloat(context, node, false, 0, data->in.Size(), "TFLMT_BROADCAST_GRAD"));
  if (data->multiply) {
    port::TensorInfo other;
    TFLMT_ENSURE_OK(port::InputInfo(context, node, 1, &other));
    TFLMT_ENSURE(other.FlatSize() == data->other.Size());
    TFLMT_ENSURE_OK(ActivationQuantOf(other, &data->other_quant));
  }
  return port::Status::kOk;
}

port::Status BroadcastEval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, 2))) return port::Status::kOk;
  const BroadcastData& data = *static_cast<const BroadcastData*>(port::UserData(node));
  reference::ValuesRef other;
  if (data.multiply) other = ValuesOf(port::Input(context, node, 1), data.other_quant);
  reference::BroadcastGrad(port::Input(context, node, 0).As<float>(), data.out,
                           data.in, data.multiply, other, data.other, data.sign,
                           port::Output(context, node, 0).As<float>());
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kMeanGradKernel = {kMeanGradOpName, MeanInit, nullptr,
                                         MeanPrepare, MeanEval, nullptr};
const port::KernelDef kCropKernel = {kCropOpName, CropInit, nullptr,
                                     CropPrepare, CropEval, nullptr};
const port::KernelDef kBroadcastGradKernel = {kBroadcastGradOpName,
                                              BroadcastInit, nullptr,
                                              BroadcastPrepare, BroadcastEval,
                                              nullptr};

}  // namespace tflmt
