// Everything the converter and the kernels must agree on, in one place: op
// names, each op's options version, and the enums written into options blobs
// or fed as inputs. converter/constants.py is the Python side;
// tests/test_constants.py parses this file (and reference/types.h, which
// holds Activation and LinearKind because the math switches on them) and
// fails when the two drift.
//
// Options versions: the first byte of every op's options blob. Bump an op's
// version when its blob layout or meaning changes; a model converted for
// another version is then refused in Init with a message, never misread.
#ifndef TFLM_OPS_KERNELS_CONSTANTS_H_
#define TFLM_OPS_KERNELS_CONSTANTS_H_

#include <cstdint>

#include "reference/types.h"

namespace tflmt {

// ---- Op names (the custom op code in the model) -----------------------------
constexpr char kStateOpName[] = "TFLMT_STATE";
constexpr char kFullyConnectedOpName[] = "TFLMT_FULLY_CONNECTED";
constexpr char kFullyConnectedGradOpName[] = "TFLMT_FULLY_CONNECTED_GRAD";
constexpr char kConv2DOpName[] = "TFLMT_CONV_2D";
constexpr char kConv2DGradOpName[] = "TFLMT_CONV_2D_GRAD";
constexpr char kDepthwiseConv2DOpName[] = "TFLMT_DEPTHWISE_CONV_2D";
constexpr char kDepthwiseConv2DGradOpName[] = "TFLMT_DEPTHWISE_CONV_2D_GRAD";
constexpr char kAdapterOpName[] = "TFLMT_ADAPTER";
constexpr char kAdapterGradOpName[] = "TFLMT_ADAPTER_GRAD";
constexpr char kActivationGradOpName[] = "TFLMT_ACTIVATION_GRAD";
constexpr char kSoftmaxGradOpName[] = "TFLMT_SOFTMAX_GRAD";
constexpr char kLossOpName[] = "TFLMT_LOSS";
constexpr char kOptimizerOpName[] = "TFLMT_OPTIMIZER";
constexpr char kAddGradsOpName[] = "TFLMT_ADD_GRADS";
constexpr char kPoolGradOpName[] = "TFLMT_POOL_GRAD";
constexpr char kMeanGradOpName[] = "TFLMT_MEAN_GRAD";
constexpr char kCropOpName[] = "TFLMT_CROP";
constexpr char kBroadcastGradOpName[] = "TFLMT_BROADCAST_GRAD";
// Integer training (--arithmetic int8): kernels/lora_int.cc, loss_int.cc, sgd_int.cc.
constexpr char kFullyConnectedIntOpName[] = "TFLMT_FULLY_CONNECTED_INT";
constexpr char kFullyConnectedIntGradOpName[] = "TFLMT_FULLY_CONNECTED_INT_GRAD";
constexpr char kLossIntOpName[] = "TFLMT_LOSS_INT";
constexpr char kSgdIntOpName[] = "TFLMT_SGD_INT";

// ---- Options versions, one per op ---------------------------------------------
constexpr uint8_t kStateOptionsVersion = 1;
constexpr uint8_t kFullyConnectedOptionsVersion = 1;
constexpr uint8_t kFullyConnectedGradOptionsVersion = 1;
constexpr uint8_t kConv2DOptionsVersion = 1;
constexpr uint8_t kConv2DGradOptionsVersion = 1;
constexpr uint8_t kDepthwiseConv2DOptionsVersion = 1;
constexpr uint8_t kDepthwiseConv2DGradOptionsVersion = 1;
constexpr uint8_t kAdapterOptionsVersion = 1;
constexpr uint8_t kAdapterGradOptionsVersion = 1;
constexpr uint8_t kActivationGradOptionsVersion = 1;
constexpr uint8_t kSoftmaxGradOptionsVersion = 1;
constexpr uint8_t kLossOptionsVersion = 1;
// TFLMT_LOSS options with positive / negative class weights (binary
// cross-entropy; two floats appended); version 1 blobs stay valid.
constexpr uint8_t kLossWeightedVersion = 2;
constexpr uint8_t kOptimizerOptionsVersion = 1;
// TFLMT_OPTIMIZER options with a regularizer toward the starting point
// (kind and lambda appended); version 1 blobs stay valid.
constexpr uint8_t kOptimizerRegularizedVersion = 2;
constexpr uint8_t kAddGradsOptionsVersion = 1;
constexpr uint8_t kPoolGradOptionsVersion = 1;
constexpr uint8_t kMeanGradOptionsVersion = 1;
constexpr uint8_t kCropOptionsVersion = 1;
constexpr uint8_t kBroadcastGradOptionsVersion = 1;
constexpr uint8_t kFullyConnectedIntOptionsVersion = 1;
constexpr uint8_t kFullyConnectedIntGradOptionsVersion = 1;
constexpr uint8_t kLossIntOptionsVersion = 1;
constexpr uint8_t kSgdIntOptionsVersion = 1;

// ---- Enums ----------------------------------------------------------------------
using reference::Activation;
using reference::LinearKind;

// The value of a converted model's `mode` input (int32 [1]).
enum class Mode : int32_t {
  kInfer = 0,     // forward pass only
  kTrain = 1,     // forward, loss, backward, optimizer
  kEvaluate = 2,  // forward and loss, nothing changes
  kSkip = 3,      // a bad sample: forward only, counted as skipped
};

// TFLMT_LOSS options: which loss.
enum class LossKind : uint8_t {
  kSoftmaxCrossEntropy = 0,
  kMeanSquaredError = 1,
  kBinaryCrossEntropy = 2,
};

// TFLMT_OPTIMIZER options: which update rule.
enum class OptimizerKind : uint8_t { kSgd = 0, kMomentum = 1, kAdam = 2 };

// TFLMT_OPTIMIZER options (version 2): the penalty toward the starting
// parameters w0. kL2Sp: lambda/2 |w - w0|^2; kEwc: lambda/2 sum F_i (w_i -
// w0_i)^2 with a Fisher diagonal F from the model.
enum class RegularizerKind : uint8_t { kNone = 0, kL2Sp = 1, kEwc = 2 };

// TFLMT_POOL_GRAD options: which pool.
enum class PoolKind : uint8_t { kAverage = 0, kMax = 1 };

// TFLMT_BROADCAST_GRAD options: which operand gradient (kSubtract: the
// second operand of a SUB).
enum class BroadcastKind : uint8_t { kAdd = 0, kSubtract = 1, kMultiply = 2 };

// Linear layer options (forward and _GRAD ops): bits of the flags byte.
enum class GradFlag : uint8_t {
  kDyPooled = 1,        // backward: dy is pooled over the output positions
  kActivationMask = 2,  // forward writes, backward reads, a 1-bit mask
};

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_CONSTANTS_H_
