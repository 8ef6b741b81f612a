// Integer training through convolutions (--arithmetic int8; converter/
// integer_conv.py). Three ops, integers only, math in reference/conv_int_grad.h:
//
// TFLMT_CONV_INT: an int8 CONV_2D or DEPTHWISE_CONV_2D whose bias trains (an
//   int16 delta in the state, added in output steps; zero: the stock bytes).
//   Inputs:  0 x (int8), 1 filter (int8, constant), 2 bias (int32 constant,
//            or -1), 3 state, 4 requantization (int32 constant [out_c, 2])
//   Outputs: 0 y (int8)
// TFLMT_CONV_INT_GRAD: the backward pass of an int8 CONV_2D / DEPTHWISE on the
//   way to the loss: the bias delta's gradient (when it trains) and the input
//   gradient (when a layer below trains).
//   Inputs:  0 dy (int16), 1 dy exponent (int32 [1]), 2 y (int8, or -1
//            without activation), 3 filter, 4 state (or -1), 5 mode,
//            6 weight-scale ratios (int32 constant [out_c], Q14)
//   Outputs: 0 dx (int16, optional), 1 dx exponent (int32 [1], with dx)
// TFLMT_POOL_INT_GRAD: the input gradient of MAX_POOL_2D, AVERAGE_POOL_2D or
//   MEAN over height and width (an average pool over the whole image).
//   Inputs:  0 dy (int16), 1 dy exponent, 2 x (int8; max pool only, else -1),
//            3 mode
//   Outputs: 0 dx (int16), 1 dx exponent
#include "kernels/integer_state.h"
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "reference/conv_int_grad.h"

namespace tflmt {
namespace {

using reference::ConvGeometry;
using reference::QMult;

bool ReadQMult(OptionsReader& r, QMult* q) {
  q->multiplier = r.I32();
  q->shift = r.I32();
  return q->multiplier >= 0 && q->shift > -64 && q->shift < 64;
}

// Every dimension fits 2^15, so products of two of them (and index math in
// int) cannot overflow; the tensor sizes are checked against them in Prepare.
constexpr int kMaxDim = 1 << 15;

bool InRange(int v, int low) { return v >= low && v < kMaxDim; }

// The geometry blob both conv ops and the pool op start with.
bool ReadGeometry(OptionsReader& r, ConvGeometry* g) {
  g->batches = r.I32();
  g->in_h = r.I32();
  g->in_w = r.I32();
  g->in_c = r.I32();
  g->out_h = r.I32();
  g->out_w = r.I32();
  g->out_c = r.I32();
  g->k_h = r.I32();
  g->k_w = r.I32();
  g->stride_h = r.I32();
  g->stride_w = r.I32();
  g->dilation_h = r.I32();
  g->dilation_w = r.I32();
  g->pad_top = r.I32();
  g->pad_left = r.I32();
  g->depth_multiplier = r.I32();
  return InRange(g->batches, 1) && InRange(g->in_h, 1) && InRange(g->in_w, 1) &&
         InRange(g->in_c, 1) && InRange(g->out_h, 1) && InRange(g->out_w, 1) &&
         InRange(g->out_c, 1) && InRange(g->k_h, 1) && InRange(g->k_w, 1) &&
         InRange(g->stride_h, 1) && InRange(g->stride_w, 1) &&
         InRange(g->dilation_h, 1) && InRange(g->dilation_w, 1) &&
         InRange(g->pad_top, 0) && InRange(g->pad_left, 0) &&
         InRange(g->depth_multiplier, 1);
}

int64_t InValues(const ConvGeometry& g) {
  return int64_t{g.batches} * g.in_h * g.in_w * g.in_c;
}
int64_t OutValues(const ConvGeometry& g) {
  return int64_t{g.batches} * g.out_h * g.out_w * g.out_c;
}
int64_t FilterValues(const ConvGeometry& g, bool depthwise) {
  return depthwise ? int64_t{g.k_h} * g.k_w * g.out_c
                   : int64_t{g.out_c} * g.k_h * g.k_w * g.in_c;
}
bool ChannelsAgree(const ConvGeometry& g, bool depthwise) {
  return depthwise ? g.out_c == g.in_c * g.depth_multiplier : g.depth_multiplier == 1;
}

// The tensor sizes must fit the int the kernels index with.
constexpr int64_t kMaxValues = int64_t{1} << 30;

port::Status CheckSize(const port::TensorInfo& info, const char* op, const char* what,
                       port::DataType type, int64_t count) {
  TFLMT_ENSURE_MSG(count < kMaxValues, "%s: %s is too large", op, what);
  return CheckTensor(info, op, what, type, static_cast<int>(count));
}

// The bias delta (int16, out_c values from bias_offset) inside the state.
port::Status CheckState(port::Context* context, port::Node* node, int index,
                        int64_t params_end, const char* op) {
  port::TensorInfo info;
  TFLMT_ENSURE_OK(RequireInput(context, node, index, op, "state", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "state", port::DataType::kUInt8, -1));
  // Parameters (2 bytes) and accumulators (4 bytes) of every value.
  TFLMT_ENSURE_MSG(uint64_t(state::kHeaderBytes) + 6 * uint64_t(params_end) <= info.bytes,
                   "%s: the bias does not fit the state", op);
  return port::Status::kOk;
}

bool StateCovers(int64_t params_end, const uint8_t* s) {
  return params_end <= int64_t{state::ParamCount(s)};
}

// ---- forward ---------------------------------------------------------------------------
constexpr int kX = 0;
constexpr int kFilter = 1;
constexpr int kBias = 2;
constexpr int kForwardState = 3;
constexpr int kRequant = 4;
constexpr int kY = 0;

struct ForwardData {
  ConvGeometry geometry;
  int bias_offset = 0;
  reference::IntConvForwardParams params;  // channel_requant set in Prepare
};

void* ForwardInit(port::Context* context, const char* options, size_t length) {
  return InitOpData<ForwardData>(
      context, options, length, kConvIntOpName, kConvIntOptionsVersion,
      [](OptionsReader& r, ForwardData* d) {
        reference::IntConvForwardParams& p = d->params;
        const int32_t depthwise = r.I32();
        p.depthwise = depthwise == 1;
        if (!ReadGeometry(r, &d->geometry)) return false;
        d->bias_offset = r.I32();
        p.x_zero_point = r.I32();
        p.y_zero_point = r.I32();
        p.act_min = r.I32();
        p.act_max = r.I32();
        return (depthwise == 0 || depthwise == 1) && ReadQMult(r, &p.bias) &&
               ChannelsAgree(d->geometry, p.depthwise) && d->bias_offset >= 0 &&
               p.x_zero_point >= -128 && p.x_zero_point <= 127 &&
               p.y_zero_point >= -128 && p.y_zero_point <= 127 &&
               p.act_min >= -128 && p.act_max <= 127 && p.act_min <= p.act_max;
      });
}

port::Status ForwardPrepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kConvIntOpName;
  ForwardData* data = static_cast<ForwardData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  const ConvGeometry& g = data->geometry;
  TFLMT_ENSURE_OK(CheckArity(node, op, 5, 5, 1, 1));
  port::TensorInfo info;
  TFLMT_ENSURE_OK(RequireInput(context, node, kX, op, "x", &info));
  TFLMT_ENSURE_OK(CheckSize(info, op, "x", port::DataType::kInt8, InValues(g)));
  TFLMT_ENSURE_OK(RequireInput(context, node, kFilter, op, "filter", &info));
  TFLMT_ENSURE_OK(CheckSize(info, op, "filter", port::DataType::kInt8,
                            FilterValues(g, data->params.depthwise)));
  TFLMT_ENSURE_MSG(info.constant_data != nullptr, "%s: filter must be constant", op);
  if (port::HasInput(node, kBias)) {
    TFLMT_ENSURE_OK(RequireInput(context, node, kBias, op, "bias", &info));
    TFLMT_ENSURE_OK(CheckTensor(info, op, "bias", port::DataType::kInt32, g.out_c));
  }
  TFLMT_ENSURE_OK(CheckState(context, node, kForwardState, data->bias_offset + int64_t{g.out_c}, op));
  TFLMT_ENSURE_OK(RequireInput(context, node, kRequant, op, "requantization", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "requantization", port::DataType::kInt32, 2 * g.out_c));
  TFLMT_ENSURE_MSG(info.constant_data != nullptr, "%s: requantization must be constant", op);
  data->params.channel_requant = static_cast<const int32_t*>(info.constant_data);
  TFLMT_ENSURE_OK(RequireOutput(context, node, kY, op, "y", &info));
  TFLMT_ENSURE_OK(CheckSize(info, op, "y", port::DataType::kInt8, OutValues(g)));
  return port::Status::kOk;
}

port::Status ForwardEval(port::Context* context, port::Node* node) {
  const ForwardData& data = *static_cast<const ForwardData*>(port::UserData(node));
  uint8_t* s = port::Input(context, node, kForwardState).As<uint8_t>();
  if (!StateCovers(data.bias_offset + int64_t{data.geometry.out_c}, s)) {
    port::Log("%s: the bias does not fit the state", kConvIntOpName);
    return port::Status::kError;
  }
  const port::TensorView bias = port::Input(context, node, kBias);
  reference::ConvIntForward(data.geometry, data.params,
                            port::Input(context, node, kX).As<int8_t>(),
                            port::Input(context, node, kFilter).As<int8_t>(),
                            bias.present() ? bias.As<int32_t>() : nullptr,
                            integer_state::Params(s) + data.bias_offset,
                            port::Output(context, node, kY).As<int8_t>());
  return port::Status::kOk;
}

// ---- backward ----------------------------------------------------------------------------
constexpr int kDy = 0;
constexpr int kDyExponent = 1;
constexpr int kGradY = 2;
constexpr int kGradFilter = 3;
constexpr int kGradState = 4;
constexpr int kGradMode = 5;
constexpr int kRatios = 6;
constexpr int kDx = 0;
constexpr int kDxExponent = 1;

struct GradData {
  ConvGeometry geometry;
  int bias_offset = -1;  // -1: the bias does not train
  reference::IntConvBackwardParams params;  // channel_weight_ratio set in Prepare
  bool computes_dx = false;
  int scratch = -1;
};

void* GradInit(port::Context* context, const char* options, size_t length) {
  return InitOpData<GradData>(
      context, options, length, kConvIntGradOpName, kConvIntGradOptionsVersion,
      [](OptionsReader& r, GradData* d) {
        reference::IntConvBackwardParams& p = d->params;
        const int32_t depthwise = r.I32();
        p.depthwise = depthwise == 1;
        if (!ReadGeometry(r, &d->geometry)) return false;
        d->bias_offset = r.I32();
        p.pass_min = r.I32();
        p.pass_max = r.I32();
        const bool ok = ReadQMult(r, &p.grad_bias) && ReadQMult(r, &p.dx_weights);
        p.dx_base = r.I32();
        return ok && (depthwise == 0 || depthwise == 1) &&
               ChannelsAgree(d->geometry, p.depthwise) && d->bias_offset >= -1 &&
               p.dx_base > -128 && p.dx_base < 128;
      });
}

port::Status GradPrepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kConvIntGradOpName;
  GradData* data = static_cast<GradData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  const ConvGeometry& g = data->geometry;
  TFLMT_ENSURE_OK(CheckArity(node, op, 7, 7, 0, 2));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kGradMode, op));
  port::TensorInfo info;
  TFLMT_ENSURE_OK(RequireInput(context, node, kDy, op, "dy", &info));
  TFLMT_ENSURE_OK(CheckSize(info, op, "dy", port::DataType::kInt16, OutValues(g)));
  TFLMT_ENSURE_OK(RequireInput(context, node, kDyExponent, op, "dy exponent", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "dy exponent", port::DataType::kInt32, 1));
  if (port::HasInput(node, kGradY)) {
    TFLMT_ENSURE_OK(RequireInput(context, node, kGradY, op, "y", &info));
    TFLMT_ENSURE_OK(CheckSize(info, op, "y", port::DataType::kInt8, OutValues(g)));
  }
  TFLMT_ENSURE_OK(RequireInput(context, node, kGradFilter, op, "filter", &info));
  TFLMT_ENSURE_OK(CheckSize(info, op, "filter", port::DataType::kInt8,
                            FilterValues(g, data->params.depthwise)));
  TFLMT_ENSURE_OK(RequireInput(context, node, kRatios, op, "weight-scale ratios", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "weight-scale ratios", port::DataType::kInt32, g.out_c));
  TFLMT_ENSURE_MSG(info.constant_data != nullptr, "%s: weight-scale ratios must be constant", op);
  data->params.channel_weight_ratio = static_cast<const int32_t*>(info.constant_data);
  const bool trains = data->bias_offset >= 0;
  if (trains) {
    TFLMT_ENSURE_OK(CheckState(context, node, kGradState, data->bias_offset + int64_t{g.out_c}, op));
  }
  data->computes_dx = port::NumOutputs(node) == 2;
  TFLMT_ENSURE_MSG(data->computes_dx || port::NumOutputs(node) == 0,
                   "%s: outputs are dx and its exponent, or none", op);
  TFLMT_ENSURE_MSG(data->computes_dx || trains, "%s: computes nothing", op);
  int64_t scratch_values = g.out_c;
  if (data->computes_dx) {
    TFLMT_ENSURE_OK(RequireOutput(context, node, kDx, op, "dx", &info));
    TFLMT_ENSURE_OK(CheckSize(info, op, "dx", port::DataType::kInt16, InValues(g)));
    TFLMT_ENSURE_OK(RequireOutput(context, node, kDxExponent, op, "dx exponent", &info));
    TFLMT_ENSURE_OK(CheckTensor(info, op, "dx exponent", port::DataType::kInt32, 1));
    scratch_values += InValues(g);
  }
  TFLMT_ENSURE_MSG(scratch_values < kMaxValues, "%s: the layer is too large", op);
  return port::RequestScratch(context, sizeof(int64_t) * static_cast<size_t>(scratch_values),
                              &data->scratch);
}

port::Status GradEval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kGradMode))) return port::Status::kOk;
  const GradData& data = *static_cast<const GradData*>(port::UserData(node));
  int32_t* grad_bias = nullptr;
  if (data.bias_offset >= 0) {
    uint8_t* s = port::Input(context, node, kGradState).As<uint8_t>();
    if (!StateCovers(data.bias_offset + int64_t{data.geometry.out_c}, s)) {
      port::Log("%s: the bias does not fit the state", kConvIntGradOpName);
      return port::Status::kError;
    }
    grad_bias = integer_state::Grads(s) + data.bias_offset;
  }
  const port::TensorView y = port::Input(context, node, kGradY);
  reference::ConvIntBackward(
      data.geometry, data.params, port::Input(context, node, kDy).As<int16_t>(),
      *port::Input(context, node, kDyExponent).As<int32_t>(),
      y.present() ? y.As<int8_t>() : nullptr,
      port::Input(context, node, kGradFilter).As<int8_t>(), grad_bias,
      data.computes_dx ? port::Output(context, node, kDx).As<int16_t>() : nullptr,
      data.computes_dx ? port::Output(context, node, kDxExponent).As<int32_t>() : nullptr,
      static_cast<int64_t*>(port::Scratch(context, data.scratch)));
  return port::Status::kOk;
}

// ---- pools -------------------------------------------------------------------------------
constexpr int kPoolDy = 0;
constexpr int kPoolDyExponent = 1;
constexpr int kPoolX = 2;
constexpr int kPoolMode = 3;

struct PoolData {
  ConvGeometry geometry;
  reference::IntPoolKind kind = reference::IntPoolKind::kMax;
  int scratch = -1;
};

void* PoolInit(port::Context* context, const char* options, size_t length) {
  return InitOpData<PoolData>(
      context, options, length, kPoolIntGradOpName, kPoolIntGradOptionsVersion,
      [](OptionsReader& r, PoolData* d) {
        const int32_t kind = r.I32();
        d->kind = static_cast<reference::IntPoolKind>(kind);
        return (kind == 0 || kind == 1) && ReadGeometry(r, &d->geometry) &&
               d->geometry.in_c == d->geometry.out_c && d->geometry.depth_multiplier == 1;
      });
}

port::Status PoolPrepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kPoolIntGradOpName;
  PoolData* data = static_cast<PoolData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  const ConvGeometry& g = data->geometry;
  TFLMT_ENSURE_OK(CheckArity(node, op, 4, 4, 2, 2));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kPoolMode, op));
  port::TensorInfo info;
  TFLMT_ENSURE_OK(RequireInput(context, node, kPoolDy, op, "dy", &info));
  TFLMT_ENSURE_OK(CheckSize(info, op, "dy", port::DataType::kInt16, OutValues(g)));
  TFLMT_ENSURE_OK(RequireInput(context, node, kPoolDyExponent, op, "dy exponent", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "dy exponent", port::DataType::kInt32, 1));
  const bool is_max = data->kind == reference::IntPoolKind::kMax;
  TFLMT_ENSURE_MSG(port::HasInput(node, kPoolX) == is_max,
                   "%s: a max pool reads its input x (and only a max pool)", op);
  if (is_max) {
    TFLMT_ENSURE_OK(RequireInput(context, node, kPoolX, op, "x", &info));
    TFLMT_ENSURE_OK(CheckSize(info, op, "x", port::DataType::kInt8, InValues(g)));
  }
  TFLMT_ENSURE_OK(RequireOutput(context, node, kDx, op, "dx", &info));
  TFLMT_ENSURE_OK(CheckSize(info, op, "dx", port::DataType::kInt16, InValues(g)));
  TFLMT_ENSURE_OK(RequireOutput(context, node, kDxExponent, op, "dx exponent", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "dx exponent", port::DataType::kInt32, 1));
  // Only overlapping windows sum shares: the others need no scratch.
  if (!reference::PoolWindowsOverlap(g)) return port::Status::kOk;
  return port::RequestScratch(context, sizeof(int64_t) * static_cast<size_t>(InValues(g)),
                              &data->scratch);
}

port::Status PoolEval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kPoolMode))) return port::Status::kOk;
  const PoolData& data = *static_cast<const PoolData*>(port::UserData(node));
  const port::TensorView x = port::Input(context, node, kPoolX);
  reference::PoolIntBackward(
      data.geometry, data.kind, port::Input(context, node, kPoolDy).As<int16_t>(),
      *port::Input(context, node, kPoolDyExponent).As<int32_t>(),
      x.present() ? x.As<int8_t>() : nullptr, port::Output(context, node, kDx).As<int16_t>(),
      port::Output(context, node, kDxExponent).As<int32_t>(),
      data.scratch >= 0 ? static_cast<int64_t*>(port::Scratch(context, data.scratch)) : nullptr);
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kConvIntKernel = {kConvIntOpName, ForwardInit, nullptr,
                                        ForwardPrepare, ForwardEval, nullptr};
const port::KernelDef kConvIntGradKernel = {kConvIntGradOpName, GradInit, nullptr,
                                            GradPrepare, GradEval, nullptr};
const port::KernelDef kPoolIntGradKernel = {kPoolIntGradOpName, PoolInit, nullptr,
                                            PoolPrepare, PoolEval, nullptr};

}  // namespace tflmt
