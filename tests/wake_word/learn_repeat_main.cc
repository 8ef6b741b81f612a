// learn_repeat: tflmt::LearnRepeat on the real TFLM MicroInterpreter, as
// firmware runs it after the user repeated a missed wake word.
// tests/test_wake_word_device.py builds it against TFLM_DIR and compares the
// saved state with the same replay through tflm_train's TrainableModel.
//
//   learn_repeat MODEL STREAM CAPACITY PRESS RELEASE EPOCHS LR POSITIVE_WEIGHT BEFORE_PRESS
//
// STREAM holds int8 invocations (the model's input bytes), pushed in order
// into a FeatureRing of CAPACITY invocations, each after one inference as a
// device would run them live. Prints "result <status> <positives>
// <negatives> <steps> <inferences> <first_loss> <last_loss>" and writes the
// saved state to MODEL.state.
// A host test program: std::vector is fine here.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "device/trainer.h"
#include "device/wake_word_trainer.h"
#include "port/tflm/tflm_train_ops.h"
#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

using Resolver = tflite::MicroMutableOpResolver<16 + tflmt::AllKernels::kCount>;

bool ReadFile(const char* path, std::vector<uint8_t>* bytes) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  uint8_t buffer[4096];
  size_t n;
  bytes->clear();
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) {
    bytes->insert(bytes->end(), buffer, buffer + n);
  }
  std::fclose(f);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr, "usage: see the header comment\n");
    return 2;
  }
  std::vector<uint8_t> model, stream;
  if (!ReadFile(argv[1], &model) || !ReadFile(argv[2], &stream)) return 2;
  const size_t capacity = std::strtoul(argv[3], nullptr, 10);
  const uint32_t press = std::strtoul(argv[4], nullptr, 10);
  const uint32_t release = std::strtoul(argv[5], nullptr, 10);
  tflmt::RepeatConfig config;
  config.epochs = std::strtoul(argv[6], nullptr, 10);
  config.learning_rate = std::strtof(argv[7], nullptr);
  config.positive_weight = std::strtof(argv[8], nullptr);
  config.labels.before_press = static_cast<int8_t>(std::atoi(argv[9]));

  Resolver resolver;
  resolver.AddCallOnce();
  resolver.AddVarHandle();
  resolver.AddReadVariable();
  resolver.AddAssignVariable();
  resolver.AddReshape();
  resolver.AddConcatenation();
  resolver.AddStridedSlice();
  resolver.AddConv2D();
  resolver.AddDepthwiseConv2D();
  resolver.AddFullyConnected();
  resolver.AddLogistic();
  resolver.AddQuantize();
  resolver.AddDequantize();
  resolver.AddAdd();
  if (tflmt::RegisterOps(resolver) != kTfLiteOk) return 3;
  // A streaming model keeps its buffers in resource variables, which the
  // interpreter needs from the firmware (allocated in the same arena).
  std::vector<uint8_t> arena(512 * 1024);
  tflite::MicroAllocator* allocator =
      tflite::MicroAllocator::Create(arena.data(), arena.size());
  tflite::MicroResourceVariables* variables =
      tflite::MicroResourceVariables::Create(allocator, 16);
  tflite::MicroInterpreter interpreter(tflite::GetModel(model.data()), resolver,
                                       allocator, variables);
  if (interpreter.AllocateTensors() != kTfLiteOk) return 4;
  tflmt::Trainer trainer(interpreter);
  if (trainer.Begin() != kTfLiteOk) return 5;

  // Live: every invocation is inferred, then pushed into the ring.
  const size_t bytes = trainer.InputBytes();
  std::vector<uint8_t> ring_bytes(capacity * bytes);
  tflmt::FeatureRing ring;
  if (!ring.Init(ring_bytes.data(), ring_bytes.size(), bytes)) return 6;
  std::vector<float> prediction(trainer.OutputCount());
  for (size_t offset = 0; offset + bytes <= stream.size(); offset += bytes) {
    if (trainer.SetInputBytes(stream.data() + offset, bytes) != kTfLiteOk ||
        trainer.Predict(prediction.data()) != kTfLiteOk) {
      return 7;
    }
    ring.Push(stream.data() + offset);
  }

  std::vector<int8_t> labels(capacity);
  std::vector<uint8_t> state(trainer.StateBytes());
  tflmt::RepeatResult result;
  const TfLiteStatus status =
      tflmt::LearnRepeat(trainer, ring, press, release, config, labels.data(),
                         labels.size(), state.data(), state.size(), &result);
  std::printf("result %d %zu %zu %u %u %.9g %.9g\n", static_cast<int>(status),
              result.labels.positives, result.labels.negatives, result.steps,
              result.inferences, result.first_positive_loss,
              result.last_positive_loss);
  if (status != kTfLiteOk) return 0;
  const std::string out = std::string(argv[1]) + ".state";
  FILE* f = std::fopen(out.c_str(), "wb");
  if (f == nullptr) return 8;
  std::fwrite(state.data(), 1, state.size(), f);
  std::fclose(f);
  return 0;
}
