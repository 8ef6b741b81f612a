// TFLMT_FULLY_CONNECTED_INT and TFLMT_FULLY_CONNECTED_INT_GRAD: an int8
// FULLY_CONNECTED layer with an int16 LoRA and/or an int16 trainable bias
// delta (integer training, --arithmetic int8), and the backward pass of any
// int8 FULLY_CONNECTED layer on the way to the loss (with the gradients of
// what it trains). Integers only: every
// scale arrives as a fixed-point multiplier from the converter
// (converter/integer.py); the math is reference/lora_int.h.
//
// Forward inputs:  0 x (int8), 1 weights (int8, constant), 2 bias (int32
//                  constant, or -1), 3 state, 4 requantization (int32
//                  constant [out, 2]: multiplier, shift per output channel)
// Forward outputs: 0 y (int8), 1 LoRA hidden h = A (x - zx) (int32 [rows, r])
// Grad inputs:     0 dy (int16), 1 dy exponent (int32 [1]), 2 y (int8, or -1
//                  without activation), 3 x (int8, or -1 without LoRA),
//                  4 weights, 5 state (or -1 when it trains nothing), 6 mode,
//                  7 LoRA hidden (or -1), 8 weight-scale ratios (int32
//                  constant [out], Q14)
// Grad outputs:    0 dx (int16, optional), 1 dx exponent (int32 [1], with dx)
// Options version 2 (--method head) appends a trainable weight delta: its
// offset in the state and, forward, its QMult to output units; backward, the
// QMult of its gradient (x is then an input of the gradient op too).
#include "kernels/integer_state.h"
#include "kernels/kernel_util.h"
#include "kernels/kernels.h"
#include "reference/lora_int.h"

namespace tflmt {
namespace {

using reference::IntLinearShape;
using reference::QMult;

bool ReadQMult(OptionsReader& r, QMult* q) {
  q->multiplier = r.I32();
  q->shift = r.I32();
  return q->multiplier >= 0 && q->shift > -64 && q->shift < 64;
}

// Options both ops start with.
struct LayerOptions {
  IntLinearShape shape;
  int rank = 0;
  int a_offset = 0;  // int16 values from the start of the parameters
  int b_offset = 0;
  int bias_offset = -1;  // -1: no trainable bias
  int weights_offset = -1;  // -1: no trainable weight delta (options version 1)

  bool Read(OptionsReader& r) {
    shape.rows = r.I32();
    shape.in = r.I32();
    shape.out = r.I32();
    rank = r.I32();
    a_offset = r.I32();
    b_offset = r.I32();
    bias_offset = r.I32();
    return shape.rows > 0 && shape.in > 0 && shape.out > 0 && rank >= 0 &&
           rank <= reference::kMaxIntLoraRank &&
           (rank == 0 || (a_offset >= 0 && b_offset >= 0)) && bias_offset >= -1;
  }
  bool Trains() const { return rank > 0 || bias_offset >= 0 || weights_offset >= 0; }
  // One past the last parameter the layer trains.
  int64_t ParamsEnd() const {
    int64_t end = bias_offset >= 0 ? bias_offset + int64_t{shape.out} : 0;
    if (weights_offset >= 0) {
      const int64_t w_end = weights_offset + int64_t{shape.out} * shape.in;
      end = w_end > end ? w_end : end;
    }
    if (rank == 0) return end;
    const int64_t a_end = a_offset + int64_t{rank} * shape.in;
    const int64_t b_end = b_offset + int64_t{rank} * shape.out;
    end = a_end > end ? a_end : end;
    return b_end > end ? b_end : end;
  }
};

// The LoRA views into a state, or rank 0 when `s` does not hold them (a
// state whose header does not cover them: refused by the caller).
reference::IntLora LoraIn(const LayerOptions& o, uint8_t* s) {
  reference::IntLora lora;
  int16_t* params = integer_state::Params(s);
  int32_t* grads = integer_state::Grads(s);
  if (o.bias_offset >= 0) {
    lora.bias = params + o.bias_offset;
    lora.grad_bias = grads + o.bias_offset;
  }
  if (o.weights_offset >= 0) {
    lora.weights = params + o.weights_offset;
    lora.grad_weights = grads + o.weights_offset;
  }
  if (o.rank == 0) return lora;
  lora.rank = o.rank;
  lora.a = params + o.a_offset;
  lora.b = params + o.b_offset;
  lora.grad_a = grads + o.a_offset;
  lora.grad_b = grads + o.b_offset;
  return lora;
}

bool StateCovers(const LayerOptions& o, const uint8_t* s) {
  return o.ParamsEnd() <= int64_t{state::ParamCount(s)};
}

port::Status CheckState(port::Context* context, port::Node* node, int index,
                        const LayerOptions& o, const char* op) {
  port::TensorInfo info;
  TFLMT_ENSURE_OK(RequireInput(context, node, index, op, "state", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "state", port::DataType::kUInt8, -1));
  // Parameters (2 bytes) and accumulators (4 bytes) of every LoRA value.
  TFLMT_ENSURE_MSG(uint64_t(state::kHeaderBytes) + 6 * uint64_t(o.ParamsEnd()) <= info.bytes,
                   "%s: the LoRA does not fit the state", op);
  return port::Status::kOk;
}

// ---- forward ---------------------------------------------------------------------------
constexpr int kX = 0;
constexpr int kWeights = 1;
constexpr int kBias = 2;
constexpr int kForwardState = 3;
constexpr int kRequant = 4;
constexpr int kY = 0;
constexpr int kHidden = 1;

struct ForwardData {
  LayerOptions layer;
  reference::IntForwardParams params;  // channel_requant set in Prepare
};

// Version 2 appends the weight delta's fields to version 1's.
bool WithWeightDelta(const char* options, size_t length) {
  return options != nullptr && length > 0 && static_cast<uint8_t>(options[0]) == kIntWeightDeltaVersion;
}

void* ForwardInit(port::Context* context, const char* options, size_t length) {
  const bool delta = WithWeightDelta(options, length);
  return InitOpData<ForwardData>(
      context, options, length, kFullyConnectedIntOpName,
      delta ? kIntWeightDeltaVersion : kFullyConnectedIntOptionsVersion,
      [delta](OptionsReader& r, ForwardData* d) {
        if (!d->layer.Read(r)) return false;
        d->params.x_zero_point = r.I32();
        d->params.y_zero_point = r.I32();
        d->params.act_min = r.I32();
        d->params.act_max = r.I32();
        bool ok = ReadQMult(r, &d->params.delta) && ReadQMult(r, &d->params.bias);
        if (delta) {
          d->layer.weights_offset = r.I32();
          ok = ok && d->layer.weights_offset >= 0 && ReadQMult(r, &d->params.weights);
        }
        return ok && d->params.act_min >= -128 &&
               d->params.act_max <= 127 && d->params.act_min <= d->params.act_max;
      });
}

port::Status ForwardPrepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kFullyConnectedIntOpName;
  ForwardData* data = static_cast<ForwardData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  const LayerOptions& o = data->layer;
  TFLMT_ENSURE_OK(CheckArity(node, op, 5, 5, 1, 2));
  port::TensorInfo x, w, requant, y;
  TFLMT_ENSURE_OK(RequireInput(context, node, kX, op, "x", &x));
  TFLMT_ENSURE_OK(CheckTensor(x, op, "x", port::DataType::kInt8, o.shape.rows * o.shape.in));
  TFLMT_ENSURE_OK(RequireInput(context, node, kWeights, op, "weights", &w));
  TFLMT_ENSURE_OK(CheckTensor(w, op, "weights", port::DataType::kInt8, o.shape.out * o.shape.in));
  TFLMT_ENSURE_MSG(w.constant_data != nullptr, "%s: weights must be constant", op);
  if (port::HasInput(node, kBias)) {
    port::TensorInfo bias;
    TFLMT_ENSURE_OK(RequireInput(context, node, kBias, op, "bias", &bias));
    TFLMT_ENSURE_OK(CheckTensor(bias, op, "bias", port::DataType::kInt32, o.shape.out));
  }
  TFLMT_ENSURE_OK(CheckState(context, node, kForwardState, o, op));
  TFLMT_ENSURE_OK(RequireInput(context, node, kRequant, op, "requantization", &requant));
  TFLMT_ENSURE_OK(CheckTensor(requant, op, "requantization", port::DataType::kInt32, 2 * o.shape.out));
  TFLMT_ENSURE_MSG(requant.constant_data != nullptr, "%s: requantization must be constant", op);
  data->params.channel_requant = static_cast<const int32_t*>(requant.constant_data);
  TFLMT_ENSURE_OK(RequireOutput(context, node, kY, op, "y", &y));
  TFLMT_ENSURE_OK(CheckTensor(y, op, "y", port::DataType::kInt8, o.shape.rows * o.shape.out));
  TFLMT_ENSURE_MSG((port::NumOutputs(node) == 2) == (o.rank > 0),
                   "%s: a LoRA layer outputs its hidden rows (and only it)", op);
  if (o.rank > 0) {
    port::TensorInfo hidden;
    TFLMT_ENSURE_OK(RequireOutput(context, node, kHidden, op, "hidden", &hidden));
    TFLMT_ENSURE_OK(CheckTensor(hidden, op, "hidden", port::DataType::kInt32, o.shape.rows * o.rank));
  }
  return port::Status::kOk;
}

port::Status ForwardEval(port::Context* context, port::Node* node) {
  const ForwardData& data = *static_cast<const ForwardData*>(port::UserData(node));
  uint8_t* s = port::Input(context, node, kForwardState).As<uint8_t>();
  if (!StateCovers(data.layer, s)) {
    port::Log("%s: the LoRA does not fit the state", kFullyConnectedIntOpName);
    return port::Status::kError;
  }
  const port::TensorView bias = port::Input(context, node, kBias);
  reference::FullyConnectedIntForward(
      data.layer.shape, data.params, port::Input(context, node, kX).As<int8_t>(),
      port::Input(context, node, kWeights).As<int8_t>(),
      bias.present() ? bias.As<int32_t>() : nullptr, LoraIn(data.layer, s),
      port::Output(context, node, kY).As<int8_t>(),
      data.layer.rank > 0 ? port::Output(context, node, kHidden).As<int32_t>() : nullptr);
  return port::Status::kOk;
}

// ---- backward ----------------------------------------------------------------------------
constexpr int kDy = 0;
constexpr int kDyExponent = 1;
constexpr int kGradY = 2;
constexpr int kGradX = 3;
constexpr int kGradWeights = 4;
constexpr int kGradState = 5;
constexpr int kMode = 6;
constexpr int kGradHidden = 7;
constexpr int kRatios = 8;
constexpr int kDx = 0;
constexpr int kDxExponent = 1;

struct GradData {
  LayerOptions layer;
  reference::IntBackwardParams params;  // channel_weight_ratio set in Prepare
  bool computes_dx = false;
  int scratch = -1;
};

void* GradInit(port::Context* context, const char* options, size_t length) {
  const bool delta = WithWeightDelta(options, length);
  return InitOpData<GradData>(
      context, options, length, kFullyConnectedIntGradOpName,
      delta ? kIntWeightDeltaVersion : kFullyConnectedIntGradOptionsVersion,
      [delta](OptionsReader& r, GradData* d) {
        if (!d->layer.Read(r)) return false;
        reference::IntBackwardParams& p = d->params;
        p.x_zero_point = r.I32();
        p.pass_min = r.I32();
        p.pass_max = r.I32();
        bool ok = ReadQMult(r, &p.grad_bias) && ReadQMult(r, &p.grad_a) &&
                  ReadQMult(r, &p.grad_b) &&
                  ReadQMult(r, &p.dx_weights) && ReadQMult(r, &p.dx_lora);
        p.dx_base = r.I32();
        if (delta) {
          d->layer.weights_offset = r.I32();
          ok = ok && d->layer.weights_offset >= 0 && ReadQMult(r, &p.grad_weights);
        }
        return ok && p.dx_base > -128 && p.dx_base < 128;
      });
}

port::Status GradPrepare(port::Context* context, port::Node* node) {
  constexpr const char* op = kFullyConnectedIntGradOpName;
  GradData* data = static_cast<GradData*>(port::UserData(node));
  TFLMT_ENSURE_OK(CheckOpData(data, op));
  const LayerOptions& o = data->layer;
  const int rows = o.shape.rows;
  TFLMT_ENSURE_OK(CheckArity(node, op, 9, 9, 0, 2));
  TFLMT_ENSURE_OK(CheckModeInput(context, node, kMode, op));
  port::TensorInfo info;
  TFLMT_ENSURE_OK(RequireInput(context, node, kDy, op, "dy", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "dy", port::DataType::kInt16, rows * o.shape.out));
  TFLMT_ENSURE_OK(RequireInput(context, node, kDyExponent, op, "dy exponent", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "dy exponent", port::DataType::kInt32, 1));
  if (port::HasInput(node, kGradY)) {
    TFLMT_ENSURE_OK(RequireInput(context, node, kGradY, op, "y", &info));
    TFLMT_ENSURE_OK(CheckTensor(info, op, "y", port::DataType::kInt8, rows * o.shape.out));
  }
  TFLMT_ENSURE_OK(RequireInput(context, node, kGradWeights, op, "weights", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "weights", port::DataType::kInt8, o.shape.out * o.shape.in));
  TFLMT_ENSURE_OK(RequireInput(context, node, kRatios, op, "weight-scale ratios", &info));
  TFLMT_ENSURE_OK(CheckTensor(info, op, "weight-scale ratios", port::DataType::kInt32, o.shape.out));
  TFLMT_ENSURE_MSG(info.constant_data != nullptr, "%s: weight-scale ratios must be constant", op);
  data->params.channel_weight_ratio = static_cast<const int32_t*>(info.constant_data);
  if (o.Trains()) TFLMT_ENSURE_OK(CheckState(context, node, kGradState, o, op));
  if (o.rank > 0 || o.weights_offset >= 0) {
    TFLMT_ENSURE_OK(RequireInput(context, node, kGradX, op, "x", &info));
    TFLMT_ENSURE_OK(CheckTensor(info, op, "x", port::DataType::kInt8, rows * o.shape.in));
  }
  if (o.rank > 0) {
    TFLMT_ENSURE_OK(RequireInput(context, node, kGradHidden, op, "hidden", &info));
    TFLMT_ENSURE_OK(CheckTensor(info, op, "hidden", port::DataType::kInt32, rows * o.rank));
  }
  data->computes_dx = port::NumOutputs(node) == 2;
  TFLMT_ENSURE_MSG(data->computes_dx || port::NumOutputs(node) == 0,
                   "%s: outputs are dx and its exponent, or none", op);
  TFLMT_ENSURE_MSG(data->computes_dx || o.Trains(), "%s: computes nothing", op);
  TFLMT_ENSURE_MSG(!(data->computes_dx && o.weights_offset >= 0),
                   "%s: a trained weight delta is the last trained layer (no dx)", op);
  if (data->computes_dx) {
    TFLMT_ENSURE_OK(RequireOutput(context, node, kDx, op, "dx", &info));
    TFLMT_ENSURE_OK(CheckTensor(info, op, "dx", port::DataType::kInt16, rows * o.shape.in));
    TFLMT_ENSURE_OK(RequireOutput(context, node, kDxExponent, op, "dx exponent", &info));
    TFLMT_ENSURE_OK(CheckTensor(info, op, "dx exponent", port::DataType::kInt32, 1));
    TFLMT_ENSURE_OK(port::RequestScratch(
        context, sizeof(int64_t) * static_cast<size_t>(rows) * o.shape.in, &data->scratch));
  }
  return port::Status::kOk;
}

port::Status GradEval(port::Context* context, port::Node* node) {
  if (!IsTraining(port::Input(context, node, kMode))) return port::Status::kOk;
  const GradData& data = *static_cast<const GradData*>(port::UserData(node));
  reference::IntLora lora;
  if (data.layer.Trains()) {
    uint8_t* s = port::Input(context, node, kGradState).As<uint8_t>();
    if (!StateCovers(data.layer, s)) {
      port::Log("%s: the LoRA does not fit the state", kFullyConnectedIntGradOpName);
      return port::Status::kError;
    }
    lora = LoraIn(data.layer, s);
  }
  const port::TensorView y = port::Input(context, node, kGradY);
  const port::TensorView x = port::Input(context, node, kGradX);
  const port::TensorView hidden = port::Input(context, node, kGradHidden);
  reference::FullyConnectedIntBackward(
      data.layer.shape, data.params, port::Input(context, node, kDy).As<int16_t>(),
      *port::Input(context, node, kDyExponent).As<int32_t>(),
      y.present() ? y.As<int8_t>() : nullptr, x.present() ? x.As<int8_t>() : nullptr,
      port::Input(context, node, kGradWeights).As<int8_t>(), lora,
      hidden.present() ? hidden.As<int32_t>() : nullptr,
      data.computes_dx ? port::Output(context, node, kDx).As<int16_t>() : nullptr,
      data.computes_dx ? port::Output(context, node, kDxExponent).As<int32_t>() : nullptr,
      data.computes_dx ? static_cast<int64_t*>(port::Scratch(context, data.scratch)) : nullptr);
  return port::Status::kOk;
}

}  // namespace

const port::KernelDef kFullyConnectedIntKernel = {
    kFullyConnectedIntOpName, ForwardInit, nullptr, ForwardPrepare, ForwardEval, nullptr};
const port::KernelDef kFullyConnectedIntGradKernel = {
    kFullyConnectedIntGradOpName, GradInit, nullptr, GradPrepare, GradEval, nullptr};

}  // namespace tflmt
