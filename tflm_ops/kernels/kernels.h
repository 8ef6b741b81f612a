// Every custom op tflm-train provides: its kernel, registered under its name
// (kernels/constants.h; the converter writes the same names, and a test keeps
// the two lists equal). Backends register `AllKernels` with the interpreter.
#ifndef TFLM_OPS_KERNELS_KERNELS_H_
#define TFLM_OPS_KERNELS_KERNELS_H_

#include <cstdint>

#include "kernels/constants.h"
#include "port/port.h"

namespace tflmt {

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
extern const port::KernelDef kFullyConnectedIntKernel;
extern const port::KernelDef kFullyConnectedIntGradKernel;
extern const port::KernelDef kLossIntKernel;
extern const port::KernelDef kSgdIntKernel;
extern const port::KernelDef kDistillLossKernel;
extern const port::KernelDef kConvIntKernel;
extern const port::KernelDef kConvIntGradKernel;
extern const port::KernelDef kPoolIntGradKernel;

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
    &kCropKernel, &kBroadcastGradKernel, &kFullyConnectedIntKernel,
    &kFullyConnectedIntGradKernel, &kLossIntKernel, &kSgdIntKernel,
    &kDistillLossKernel,
    &kConvIntKernel, &kConvIntGradKernel, &kPoolIntGradKernel>;

// The mode of this invocation. Prepare has checked that the op's mode input
// exists (CheckModeInput); a missing one reads as kInfer all the same, so a
// kernel that forgot the check skips its work instead of crashing.
inline Mode ReadMode(const port::TensorView& mode) {
  if (!mode.present()) return Mode::kInfer;
  return static_cast<Mode>(*mode.As<int32_t>());
}
inline bool IsTraining(const port::TensorView& mode) {
  return ReadMode(mode) == Mode::kTrain;
}

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_KERNELS_H_
