// What TFLMT_ADAPTER and TFLMT_ADAPTER_GRAD share: the options layout of a
// bottleneck adapter and where its four trainable tensors sit in the state.
#ifndef TFLM_OPS_KERNELS_ADAPTER_COMMON_H_
#define TFLM_OPS_KERNELS_ADAPTER_COMMON_H_

#include <cstddef>

#include "port/port.h"
#include "reference/adapter.h"
#include "reference/quantization.h"

namespace tflmt {

struct AdapterLayer {
  reference::Activation activation = reference::Activation::kRelu;
  int features = 0;
  int bottleneck = 0;
  int down_offset = 0;       // D [bottleneck, features]
  int down_bias_offset = 0;  // bd [bottleneck]
  int up_offset = 0;         // U [features, bottleneck]
  int up_bias_offset = 0;    // bu [features]
};

bool ParseAdapterLayer(const char* buffer, size_t length, AdapterLayer* layer);

// Checks the state tensor and that the adapter's tensors lie inside it.
port::Status PrepareAdapterState(const port::TensorInfo& state,
                                 const AdapterLayer& layer);

reference::AdapterWeights AdapterWeightsIn(const AdapterLayer& layer,
                                           float* params);
reference::AdapterGrads AdapterGradsIn(const AdapterLayer& layer, float* grads);

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_ADAPTER_COMMON_H_
