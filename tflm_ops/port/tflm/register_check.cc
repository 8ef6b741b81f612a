// Compile check for tflm_train_ops.h: registers every tflm-train op into a
// real TFLM resolver, as a firmware would. Built only into tflm_train_tflm.
#include "port/tflm/tflm_train_ops.h"

namespace tflmt {

TfLiteStatus RegisterOpsCheck(tflite::MicroMutableOpResolver<tflmt::AllKernels::kCount + 8>& resolver);

TfLiteStatus RegisterOpsCheck(tflite::MicroMutableOpResolver<tflmt::AllKernels::kCount + 8>& resolver) {
  return RegisterOps(resolver);
}

}  // namespace tflmt
