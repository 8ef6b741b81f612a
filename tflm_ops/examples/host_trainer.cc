// host_trainer: trains a converted model through the real TFLM
// MicroInterpreter and tflmt::Trainer, as firmware would, on the host.
//
//   host_trainer MODEL DATA [--epochs N] [--lr F] [--state-out PATH]
//                [--losses-out PATH] [--foreign MODEL2] [--arena BYTES]
//
// Trains N epochs over DATA in file order (no shuffling), printing each
// epoch's mean loss, then accuracy (labels) or MSE (float targets) on DATA.
// Then checks what a device relies on, exiting non-zero if any check fails:
//   - the saved state, loaded into a second interpreter, gives bit-identical
//     predictions;
//   - a state with one damaged payload byte is refused by the next Invoke;
//   - Reset() brings back the initial predictions;
//   - with --foreign, a state written into a model converted with other
//     options (e.g. --rank 8) is refused by the next Invoke.
//
// DATA (little-endian): "TMTD", u32 version (1), u32 samples N,
// u32 input values D, u32 target values T (0: one int32 label per sample),
// then N*D float32 inputs, then N int32 labels or N*T float32 targets.
//
// A host tool: stdio and std::vector are fine here, unlike device/trainer.cc.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "device/trainer.h"
#include "kernels/training_state.h"
#include "port/tflm/tflm_train_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

// The builtins RegisterAll adds, and room for every tflm-train op.
constexpr unsigned int kBuiltinOps = 18;
using Resolver =
    tflite::MicroMutableOpResolver<kBuiltinOps + tflmt::AllKernels::kCount>;

struct Dataset {
  uint32_t count = 0;
  uint32_t x_values = 0;
  uint32_t y_values = 0;  // 0: int32 labels
  std::vector<float> x;
  std::vector<int32_t> labels;
  std::vector<float> targets;
};

bool ReadFile(const char* path, std::vector<uint8_t>* bytes) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot open %s\n", path);
    return false;
  }
  std::fseek(f, 0, SEEK_END);
  const long size = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  bytes->resize(size > 0 ? static_cast<size_t>(size) : 0);
  const bool ok = std::fread(bytes->data(), 1, bytes->size(), f) == bytes->size();
  std::fclose(f);
  return ok;
}

bool WriteFile(const std::string& path, const void* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && ok;
}

bool LoadDataset(const char* path, Dataset* data) {
  std::vector<uint8_t> bytes;
  if (!ReadFile(path, &bytes)) return false;
  uint32_t header[5];
  if (bytes.size() < sizeof(header) || std::memcmp(bytes.data(), "TMTD", 4) != 0) {
    std::fprintf(stderr, "%s is not a TMTD data file\n", path);
    return false;
  }
  std::memcpy(header, bytes.data(), sizeof(header));
  data->count = header[2];
  data->x_values = header[3];
  data->y_values = header[4];
  const size_t n = data->count;
  const size_t x_bytes = n * data->x_values * 4;
  const size_t y_bytes = n * (data->y_values == 0 ? 1 : data->y_values) * 4;
  if (header[1] != 1 || bytes.size() != sizeof(header) + x_bytes + y_bytes) {
    std::fprintf(stderr, "%s: unexpected version or size\n", path);
    return false;
  }
  const uint8_t* p = bytes.data() + sizeof(header);
  data->x.resize(n * data->x_values);
  std::memcpy(data->x.data(), p, x_bytes);
  if (data->y_values == 0) {
    data->labels.resize(n);
    std::memcpy(data->labels.data(), p + x_bytes, y_bytes);
  } else {
    data->targets.resize(n * data->y_values);
    std::memcpy(data->targets.data(), p + x_bytes, y_bytes);
  }
  return true;
}

// The model's own builtin ops (a generous set for the converter's inputs)
// plus tflm-train's custom ops.
bool RegisterAll(Resolver* resolver) {
  const TfLiteStatus builtins[] = {
      resolver->AddFullyConnected(), resolver->AddSoftmax(),
      resolver->AddLogistic(),       resolver->AddRelu(),
      resolver->AddRelu6(),          resolver->AddTanh(),
      resolver->AddReshape(),        resolver->AddSqueeze(),
      resolver->AddExpandDims(),     resolver->AddQuantize(),
      resolver->AddDequantize(),     resolver->AddConv2D(),
      resolver->AddDepthwiseConv2D(), resolver->AddAveragePool2D(),
      resolver->AddMaxPool2D(),      resolver->AddMean(),
      resolver->AddAdd(),            resolver->AddMul(),
  };
  static_assert(sizeof(builtins) / sizeof(builtins[0]) == kBuiltinOps,
                "kBuiltinOps must count the builtins added here");
  for (TfLiteStatus status : builtins) {
    if (status != kTfLiteOk) return false;
  }
  return tflmt::RegisterOps(*resolver) == kTfLiteOk;
}

// One interpreter over one model, with its arena, as a device holds them.
struct Session {
  std::vector<uint8_t> model_bytes;  // malloc'd: aligned enough for TFLM
  std::vector<uint8_t> arena;
  std::unique_ptr<tflite::MicroInterpreter> interpreter;
  std::unique_ptr<tflmt::Trainer> trainer;

  bool Open(const char* path, const Resolver& resolver, size_t arena_bytes) {
    if (!ReadFile(path, &model_bytes)) return false;
    arena.resize(arena_bytes);
    interpreter.reset(new tflite::MicroInterpreter(
        tflite::GetModel(model_bytes.data()), resolver, arena.data(),
        arena.size()));
    if (interpreter->AllocateTensors() != kTfLiteOk) {
      std::fprintf(stderr, "%s: AllocateTensors failed\n", path);
      return false;
    }
    trainer.reset(new tflmt::Trainer(*interpreter));
    return trainer->Begin() == kTfLiteOk;
  }
};

bool SetSample(tflmt::Trainer& trainer, const Dataset& data, size_t i) {
  if (trainer.SetInput(&data.x[i * data.x_values]) != kTfLiteOk) return false;
  return data.y_values == 0
             ? trainer.SetLabel(data.labels[i]) == kTfLiteOk
             : trainer.SetTarget(&data.targets[i * data.y_values]) == kTfLiteOk;
}

// Output 0 for every sample, concatenated.
bool PredictAll(tflmt::Trainer& trainer, const Dataset& data,
                std::vector<float>* out) {
  const size_t per_sample = trainer.OutputCount();
  out->assign(data.count * per_sample, 0.0f);
  for (size_t i = 0; i < data.count; ++i) {
    if (trainer.SetInput(&data.x[i * data.x_values]) != kTfLiteOk ||
        trainer.Predict(&(*out)[i * per_sample]) != kTfLiteOk) {
      return false;
    }
  }
  return true;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

int failures = 0;
void Check(bool ok, const char* what) {
  std::printf("check: %-62s %s\n", what, ok ? "ok" : "FAILED");
  if (!ok) ++failures;
}

void Usage() {
  std::fprintf(stderr,
               "usage: host_trainer MODEL DATA [--epochs N] [--lr F] "
               "[--state-out PATH] [--losses-out PATH] [--foreign MODEL2] "
               "[--arena BYTES]\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    Usage();
    return 2;
  }
  const char* model_path = argv[1];
  const char* data_path = argv[2];
  int epochs = 3;
  float lr = 0.02f;
  std::string state_out = "host_trainer.state";
  std::string losses_out;
  const char* foreign = nullptr;
  size_t arena_bytes = 256 * 1024;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--epochs") epochs = std::atoi(argv[i + 1]);
    else if (flag == "--lr") lr = std::strtof(argv[i + 1], nullptr);
    else if (flag == "--state-out") state_out = argv[i + 1];
    else if (flag == "--losses-out") losses_out = argv[i + 1];
    else if (flag == "--foreign") foreign = argv[i + 1];
    else if (flag == "--arena") arena_bytes = std::strtoul(argv[i + 1], nullptr, 10);
    else {
      Usage();
      return 2;
    }
  }

  static Resolver resolver;  // must outlive every interpreter
  if (!RegisterAll(&resolver)) {
    std::fprintf(stderr, "could not register the ops\n");
    return 1;
  }
  Dataset data;
  if (!LoadDataset(data_path, &data)) return 1;

  Session a;
  if (!a.Open(model_path, resolver, arena_bytes)) return 1;
  tflmt::Trainer& trainer = *a.trainer;
  if (trainer.InputCount() != data.x_values) {
    std::fprintf(stderr, "model takes %zu input values, data has %u\n",
                 trainer.InputCount(), data.x_values);
    return 1;
  }
  std::printf("model %s: arena used %zu bytes, state %zu bytes\n", model_path,
              a.interpreter->arena_used_bytes(), trainer.StateBytes());
  std::printf("data %s: %u samples, lr %.9g, %d epochs\n", data_path,
              data.count, static_cast<double>(lr), epochs);

  std::vector<float> initial;
  if (!PredictAll(trainer, data, &initial)) return 1;

  std::vector<float> losses;
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    double sum = 0.0;
    for (size_t i = 0; i < data.count; ++i) {
      float loss = 0.0f;
      if (!SetSample(trainer, data, i) ||
          trainer.TrainStep(lr, &loss) != kTfLiteOk) {
        std::fprintf(stderr, "training step %zu failed\n", i);
        return 1;
      }
      losses.push_back(loss);
      sum += loss;
    }
    std::printf("epoch %d: mean loss %.9g\n", epoch, sum / data.count);
  }

  std::vector<float> trained;
  if (!PredictAll(trainer, data, &trained)) return 1;
  const size_t classes = trainer.OutputCount();
  if (data.y_values == 0) {
    size_t correct = 0;
    for (size_t i = 0; i < data.count; ++i) {
      const float* p = &trained[i * classes];
      size_t best = 0;
      for (size_t c = 1; c < classes; ++c) best = p[c] > p[best] ? c : best;
      correct += static_cast<int32_t>(best) == data.labels[i];
    }
    std::printf("accuracy: %.6f (%zu/%u)\n",
                static_cast<double>(correct) / data.count, correct, data.count);
  } else {
    double se = 0.0;
    for (size_t i = 0; i < trained.size(); ++i) {
      const double d = trained[i] - data.targets[i];
      se += d * d;
    }
    std::printf("mse: %.9g\n", se / trained.size());
  }

  std::vector<uint8_t> state(trainer.StateBytes());
  if (trainer.SaveState(state.data(), state.size()) != kTfLiteOk) return 1;
  const tflmt::Trainer::Counters counters = trainer.GetCounters();
  std::printf("optimizer steps %u, skipped %u, skipped samples %u\n",
              static_cast<unsigned>(counters.steps),
              static_cast<unsigned>(counters.skipped_updates),
              static_cast<unsigned>(counters.skipped_samples));
  if (!WriteFile(state_out, state.data(), state.size())) return 1;
  std::printf("state written to %s\n", state_out.c_str());
  if (!losses_out.empty() &&
      !WriteFile(losses_out, losses.data(), losses.size() * sizeof(float))) {
    return 1;
  }

  // A second interpreter, as after a reboot: load the state, predict.
  Session b;
  if (!b.Open(model_path, resolver, arena_bytes)) return 1;
  std::vector<float> reloaded;
  Check(b.trainer->LoadState(state.data(), state.size()) == kTfLiteOk &&
            PredictAll(*b.trainer, data, &reloaded) &&
            SameBits(reloaded, trained),
        "second interpreter + LoadState: identical predictions");
  std::vector<uint8_t> state_b(state.size());
  Check(b.trainer->SaveState(state_b.data(), state_b.size()) == kTfLiteOk &&
            state_b == state,
        "second interpreter's state equals the saved bytes");

  // One damaged payload byte: the next Invoke must refuse the state.
  std::vector<uint8_t> damaged = state;
  damaged[tflmt::state::kHeaderBytes + 5] ^= 0x40;
  std::vector<float> ignored(classes);
  std::printf("(a TFLMT_STATE message is expected next)\n");
  std::fflush(stdout);
  Check(b.trainer->LoadState(damaged.data(), damaged.size()) == kTfLiteOk &&
            b.trainer->SetInput(&data.x[0]) == kTfLiteOk &&
            b.trainer->Predict(ignored.data()) != kTfLiteOk,
        "damaged state refused by Invoke");
  Check(b.trainer->LoadState(state.data(), state.size()) == kTfLiteOk &&
            PredictAll(*b.trainer, data, &reloaded) &&
            SameBits(reloaded, trained),
        "good state accepted again after the refusal");

  // Reset(): back to the model's initial adapter.
  std::vector<float> after_reset;
  Check(trainer.Reset() == kTfLiteOk && PredictAll(trainer, data, &after_reset) &&
            SameBits(after_reset, initial),
        "Reset() restores the initial predictions");

  if (foreign != nullptr) {
    Session c;
    if (!c.Open(foreign, resolver, arena_bytes)) return 1;
    std::printf("foreign model %s: state %zu bytes\n", foreign,
                c.trainer->StateBytes());
    std::printf("(Trainer and TFLMT_STATE messages are expected next)\n");
    std::fflush(stdout);
    bool refused = c.trainer->LoadState(state.data(), state.size()) != kTfLiteOk;
    if (!refused) {
      refused = c.trainer->SetInput(&data.x[0]) == kTfLiteOk &&
                c.trainer->Predict(ignored.data()) != kTfLiteOk;
    }
    Check(refused, "foreign model: Trainer::LoadState or Invoke refuses");
    // What firmware that copies a fixed-size flash slot would do: write the
    // bytes straight into the state input, whatever their size.
    TfLiteTensor* slot = c.interpreter->input(c.interpreter->inputs_size() - 1);
    c.interpreter->Reset();
    std::memset(slot->data.raw, 0xff, slot->bytes);
    std::memcpy(slot->data.raw, state.data(),
                state.size() < slot->bytes ? state.size() : slot->bytes);
    std::vector<float> foreign_out(c.trainer->OutputCount());
    Check(c.trainer->SetInput(&data.x[0]) == kTfLiteOk &&
              c.trainer->Predict(foreign_out.data()) != kTfLiteOk,
          "foreign model: raw state write refused by Invoke");
  }
  std::printf("%s\n", failures == 0 ? "all checks passed" : "CHECKS FAILED");
  return failures == 0 ? 0 : 1;
}
