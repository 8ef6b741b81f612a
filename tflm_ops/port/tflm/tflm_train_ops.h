// Device entry point: add every tflm-train op to a TFLM op resolver.
//
//   #include "port/tflm/tflm_train_ops.h"
//   tflite::MicroMutableOpResolver<tflmt::AllKernels::kCount + 8> resolver;
//   resolver.AddFullyConnected();            // the model's own builtin ops
//   tflmt::RegisterOps(resolver);            // + tflm-train's custom ops
//
// The resolver needs tflmt::AllKernels::kCount free slots.
#ifndef TFLM_OPS_PORT_TFLM_TFLM_TRAIN_OPS_H_
#define TFLM_OPS_PORT_TFLM_TFLM_TRAIN_OPS_H_

#include "kernels/kernels.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

namespace tflmt {
namespace tflm_port {

// TFLM wants TfLiteStatus-returning functions; ours return port::Status,
// which has the same values but not always the same size (arm-none-eabi-gcc
// defaults to -fshort-enums: TfLiteStatus is 1 byte there, port::Status 4), so
// the kernels' functions cannot be stored as they are. These adapters are
// instantiated per kernel.
template <const port::KernelDef* Kernel>
TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  return Kernel->prepare(context, node) == port::Status::kOk ? kTfLiteOk
                                                              : kTfLiteError;
}

template <const port::KernelDef* Kernel>
TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  return Kernel->eval(context, node) == port::Status::kOk ? kTfLiteOk
                                                           : kTfLiteError;
}

template <const port::KernelDef* Kernel>
TFLMRegistration Registration() {
  TFLMRegistration registration = {};
  registration.init = Kernel->init;
  registration.free = Kernel->free;
  registration.prepare = Kernel->prepare != nullptr ? Prepare<Kernel> : nullptr;
  registration.invoke = Eval<Kernel>;
  registration.reset = Kernel->reset;
  return registration;
}

template <unsigned int kOpCount, const port::KernelDef*... Kernels>
TfLiteStatus AddAll(tflite::MicroMutableOpResolver<kOpCount>& resolver,
                    KernelList<Kernels...>) {
  // AddCustom copies the registration, so temporaries are fine.
  const TFLMRegistration registrations[] = {Registration<Kernels>()...};
  const char* names[] = {Kernels->name...};
  for (unsigned int i = 0; i < sizeof...(Kernels); ++i) {
    if (resolver.AddCustom(names[i], &registrations[i]) != kTfLiteOk) {
      return kTfLiteError;
    }
  }
  return kTfLiteOk;
}

}  // namespace tflm_port

template <unsigned int kOpCount>
TfLiteStatus RegisterOps(tflite::MicroMutableOpResolver<kOpCount>& resolver) {
  return tflm_port::AddAll(resolver, AllKernels{});
}

}  // namespace tflmt

#endif  // TFLM_OPS_PORT_TFLM_TFLM_TRAIN_OPS_H_
