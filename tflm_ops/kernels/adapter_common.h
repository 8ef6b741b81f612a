// What TFLMT_ADAPTER and TFLMT_ADAPTER_GRAD share: the options layout of a
// bottleneck adapter and where its four trainable tensors sit in the state.
#ifndef TFLM_OPS_KERNELS_ADAPTER_COMMON_H_
#define TFLM_OPS_KERNELS_ADAPTER_COMMON_H_

#include <cstddef>

#include "kernels/options.h"
#include "port/port.h"
#include "reference/adapter.h"
#include "reference/types.h"

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

// Reads the options after the version byte; false when malformed.
bool ParseAdapterLayer(OptionsReader& reader, AdapterLayer* layer);

// Checks the state tensor and that the adapter's tensors lie inside it.
port::Status PrepareAdapterState(const port::TensorInfo& state,
                                 const AdapterLayer& layer, const char* op_name);

reference::AdapterWeights AdapterWeightsIn(const AdapterLayer& layer,
                                           float* params);
reference::AdapterGrads AdapterGradsIn(const AdapterLayer& layer, float* grads);

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_ADAPTER_COMMON_H_
