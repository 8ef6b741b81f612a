// Every custom op tflm-train provides: its name in the model file and its
// kernel. The converter writes the same names (converter/ops.py; a test keeps
// the two lists equal). Backends register `AllKernels` with the interpreter.
#ifndef TFLM_OPS_KERNELS_KERNELS_H_
#define TFLM_OPS_KERNELS_KERNELS_H_

#include <cstdint>

#include "port/port.h"

namespace tflmt {

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

extern const port::KernelDef kStateKernel;
extern const port::KernelDef kFullyConnectedKernel;
extern const port::KernelDef kFullyConnectedGradKernel;
extern const port::KernelDef kConv2DKernel;
extern const port::KernelDef kConv2DGradKernel;
extern const port::KernelDef kDepthwiseConv2DKernel;
extern const port::KernelDef kDepthwiseConv2DGradKernel;
extern const port::KernelDef kAdapterKernel;
extern const port::KernelDef kAdapterGradKernel;
extern const port::KernelDef kActivationGradKernel;
extern const port::KernelDef kSoftmaxGradKernel;
extern const port::KernelDef kLossKernel;
extern const port::KernelDef kOptimizerKernel;
extern const port::KernelDef kAddGradsKernel;
extern const port::KernelDef kPoolGradKernel;
extern const port::KernelDef kMeanGradKernel;
extern const port::KernelDef kCropKernel;
extern const port::KernelDef kBroadcastGradKernel;

template <const port::KernelDef*... Kernels>
struct KernelList {
  static constexpr int kCount = sizeof...(Kernels);
};

using AllKernels = KernelList<
    &kStateKernel, &kFullyConnectedKernel, &kFullyConnectedGradKernel,
    &kConv2DKernel, &kConv2DGradKernel, &kDepthwiseConv2DKernel,
    &kDepthwiseConv2DGradKernel, &kAdapterKernel, &kAdapterGradKernel,
    &kActivationGradKernel, &kSoftmaxGradKernel, &kLossKernel,
    &kOptimizerKernel, &kAddGradsKernel, &kPoolGradKernel, &kMeanGradKernel,
    &kCropKernel, &kBroadcastGradKernel>;

// The value of a converted model's `mode` input (int32 [1]).
enum class Mode : int32_t {
  kInfer = 0,     // forward pass only
  kTrain = 1,     // forward, loss, backward, optimizer
  kEvaluate = 2,  // forward and loss, nothing changes
  kSkip = 3,      // a bad sample: forward only, counted as skipped
};

inline Mode ReadMode(const port::TensorView& mode) {
  return static_cast<Mode>(*mode.As<int32_t>());
}
inline bool IsTraining(const port::TensorView& mode) {
  return ReadMode(mode) == Mode::kTrain;
}

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_KERNELS_H_
