// device_lifecycle: the README's lifecycle on the real TFLM MicroInterpreter
// with tflmt::Trainer, tflmt::EpisodeMonitor and tflmt::AdapterStore over an
// emulated flash, as firmware runs it. tests/test_device_lifecycle.py builds
// it against a TFLM tree (TFLM_DIR) and compares every verdict, step count,
// counter and the final state with tflm_train.episodes in the wheel.
//
//   device_lifecycle MODEL HELDOUT [distill=W] EPISODE_DATA:LR [EPISODE_DATA:LR ...]
//
// distill=W (a model converted with --distill): before each episode the
// committed adapter's teacher is recorded for every sample
// (Trainer::RecordTeacher) and each step trains on [label, W, teacher]
// (Trainer::SetDistillTarget).
// Data files are TMTD (tflm-train device data). Prints one line per episode
// ("episode <verdict> <steps> <heldout_before> <heldout_after>"), then the
// counters, then reboots (a new interpreter), loads the store's adapter and
// prints "reboot sequence <n> same_predictions <0/1>". Writes the final
// committed state to MODEL.state.
// A host test program: std::vector is fine here.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "device/adapter_store.h"
#include "device/distill.h"
#include "device/episode.h"
#include "device/trainer.h"
#include "port/tflm/tflm_train_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

using Resolver = tflite::MicroMutableOpResolver<8 + tflmt::AllKernels::kCount>;

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

struct Dataset {
  uint32_t count = 0, x_values = 0;
  std::vector<float> x;
  std::vector<int32_t> labels;
};

bool LoadDataset(const char* path, Dataset* d) {
  std::vector<uint8_t> b;
  uint32_t h[5];
  if (!ReadFile(path, &b) || b.size() < sizeof(h) || std::memcmp(b.data(), "TMTD", 4) != 0) {
    return false;
  }
  std::memcpy(h, b.data(), sizeof(h));
  if (h[1] != 1 || h[4] != 0) return false;  // labels only
  d->count = h[2];
  d->x_values = h[3];
  d->x.resize(size_t(d->count) * d->x_values);
  d->labels.resize(d->count);
  std::memcpy(d->x.data(), b.data() + sizeof(h), d->x.size() * 4);
  std::memcpy(d->labels.data(), b.data() + sizeof(h) + d->x.size() * 4, d->count * 4);
  return true;
}

struct Session {
  std::vector<uint8_t> arena = std::vector<uint8_t>(256 * 1024);
  std::unique_ptr<tflite::MicroInterpreter> interpreter;
  std::unique_ptr<tflmt::Trainer> trainer;
  bool Open(const std::vector<uint8_t>& model, const Resolver& resolver) {
    interpreter.reset(new tflite::MicroInterpreter(tflite::GetModel(model.data()), resolver,
                                                   arena.data(), arena.size()));
    if (interpreter->AllocateTensors() != kTfLiteOk) return false;
    trainer.reset(new tflmt::Trainer(*interpreter));
    return trainer->Begin() == kTfLiteOk;
  }
};

// Float32 sum in order, then divided: as tflm_train.episodes.heldout_loss.
float HeldOutLoss(tflmt::Trainer& t, const Dataset& d) {
  float total = 0.0f;
  for (uint32_t i = 0; i < d.count; ++i) {
    float loss = NAN;
    t.SetInput(&d.x[size_t(i) * d.x_values]);
    t.SetLabel(d.labels[i]);
    t.EvaluateLoss(&loss);
    total = total + loss;
  }
  return total / static_cast<float>(d.count);
}

// RAM flash for the store (NOR semantics).
struct RamFlash {
  std::vector<uint8_t> memory = std::vector<uint8_t>(2 * 8192, 0xFF);
  static bool Read(void* c, uint32_t a, uint8_t* dst, size_t n) {
    auto* f = static_cast<RamFlash*>(c);
    if (a + n > f->memory.size()) return false;
    std::memcpy(dst, f->memory.data() + a, n);
    return true;
  }
  static bool Erase(void* c, uint32_t a) {
    auto* f = static_cast<RamFlash*>(c);
    std::memset(f->memory.data() + a, 0xFF, 256);
    return true;
  }
  static bool Program(void* c, uint32_t a, const uint8_t* src, size_t n) {
    auto* f = static_cast<RamFlash*>(c);
    for (size_t i = 0; i < n; ++i) f->memory[a + i] &= src[i];
    return true;
  }
};

const char* Name(tflmt::EpisodeVerdict v) {
  switch (v) {
    case tflmt::EpisodeVerdict::kAccept: return "accept";
    case tflmt::EpisodeVerdict::kReject: return "reject";
    case tflmt::EpisodeVerdict::kLossDiverged: return "loss_diverged";
    case tflmt::EpisodeVerdict::kNotFinite: return "not_finite";
    case tflmt::EpisodeVerdict::kSaturated: return "saturated";
    default: return "continue";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return 2;
  std::vector<uint8_t> model;
  Dataset heldout;
  if (!ReadFile(argv[1], &model) || !LoadDataset(argv[2], &heldout)) return 2;
  Resolver resolver;
  resolver.AddFullyConnected();
  resolver.AddSoftmax();
  resolver.AddReshape();
  resolver.AddQuantize();
  resolver.AddDequantize();
  resolver.AddRelu();
  if (tflmt::RegisterOps(resolver) != kTfLiteOk) return 2;
  Session s;
  if (!s.Open(model, resolver)) return 2;
  tflmt::Trainer& t = *s.trainer;

  RamFlash ram;
  const tflmt::Flash flash = {&ram, 256, 1, RamFlash::Read, RamFlash::Erase, RamFlash::Program};
  tflmt::AdapterStore store(flash, 0, 8192);

  const size_t bytes = t.StateBytes();
  std::vector<uint8_t> committed(bytes), accepted(bytes);
  std::vector<float> out(t.OutputCount());
  t.SetInput(&heldout.x[0]);
  t.Predict(out.data());  // initializes the state: its header has the identity
  t.SaveState(committed.data(), bytes);
  uint64_t model_hash;
  uint32_t layout_hash;
  std::memcpy(&model_hash, committed.data() + 8, 8);
  std::memcpy(&layout_hash, committed.data() + 16, 4);
  if (store.Open(model_hash, layout_hash) != tflmt::StoreStatus::kOk || store.HasAdapter()) {
    return 3;  // empty flash: factory
  }

  int first_episode = 3;
  float distill_weight = -1.0f;  // < 0: plain labels
  if (std::strncmp(argv[3], "distill=", 8) == 0) {
    distill_weight = std::strtof(argv[3] + 8, nullptr);
    first_episode = 4;
  }
  const size_t classes = t.TargetCount() - tflmt::kDistillTargetHeader;
  for (int e = first_episode; e < argc; ++e) {
    std::string arg = argv[e];
    const size_t colon = arg.rfind(':');
    const float lr = std::strtof(arg.c_str() + colon + 1, nullptr);
    Dataset data;
    if (!LoadDataset(arg.substr(0, colon).c_str(), &data)) return 2;

    t.SaveState(committed.data(), bytes);
    // The teacher: the committed adapter's outputs, before the episode.
    std::vector<float> teacher;
    if (distill_weight >= 0.0f) {
      teacher.resize(size_t(data.count) * classes);
      for (uint32_t i = 0; i < data.count; ++i) {
        t.SetInput(&data.x[size_t(i) * data.x_values]);
        if (t.RecordTeacher(&teacher[size_t(i) * classes]) != kTfLiteOk) return 8;
      }
    }
    const float before = HeldOutLoss(t, heldout);
    tflmt::EpisodeMonitor monitor{tflmt::EpisodeLimits()};
    monitor.Begin(t.GetCounters().skipped_updates, before);
    tflmt::EpisodeVerdict v = tflmt::EpisodeVerdict::kContinue;
    uint32_t steps = 0;
    for (uint32_t i = 0; i < data.count && v == tflmt::EpisodeVerdict::kContinue; ++i) {
      float loss = NAN;
      t.SetInput(&data.x[size_t(i) * data.x_values]);
      if (distill_weight >= 0.0f) {
        t.SetDistillTarget(data.labels[i], distill_weight, &teacher[size_t(i) * classes]);
      } else {
        t.SetLabel(data.labels[i]);
      }
      if (t.TrainStep(lr, &loss) != kTfLiteOk) return 4;
      ++steps;
      v = monitor.Observe(loss, true, t.GetCounters().skipped_updates, t.OutputSaturated());
    }
    float after = NAN;
    if (v == tflmt::EpisodeVerdict::kContinue) {
      after = HeldOutLoss(t, heldout);
      v = monitor.Finish(before, after);
    }
    // Every episode ends with one commit: the accepted adapter, or the
    // committed one again with its counters raised by Restore (a rejection
    // or rollback is not lost to a power cut before the next acceptance).
    if (v != tflmt::EpisodeVerdict::kAccept &&
        t.Restore(committed.data(), bytes, v) != kTfLiteOk) {
      return 6;
    }
    t.SaveState(accepted.data(), bytes);
    if (store.Commit(accepted.data(), bytes) != tflmt::StoreStatus::kOk) return 5;
    std::printf("episode %s %u %.9g %.9g\n", Name(v), steps, before, after);
  }
  const tflmt::Trainer::Counters c = t.GetCounters();
  std::printf("counters %u %u %u %u %u\n", c.steps, c.skipped_updates, c.skipped_samples,
              c.rejected_episodes, c.rollbacks);
  std::vector<uint8_t> final_state(bytes);
  t.SetInput(&heldout.x[0]);
  t.Predict(out.data());  // the restored state verifies on this invocation
  t.SaveState(final_state.data(), bytes);
  FILE* f = std::fopen((std::string(argv[1]) + ".state").c_str(), "wb");
  if (f == nullptr) return 2;
  std::fwrite(final_state.data(), 1, bytes, f);
  std::fclose(f);

  // Reboot: a new interpreter; the store gives the last committed adapter.
  std::vector<float> before_reboot(out);
  Session rebooted;
  if (!rebooted.Open(model, resolver)) return 7;
  tflmt::AdapterStore reopened(flash, 0, 8192);
  if (reopened.Open(model_hash, layout_hash) != tflmt::StoreStatus::kOk) return 7;
  bool same = false;
  if (reopened.HasAdapter() && reopened.Read(accepted.data(), bytes) == tflmt::StoreStatus::kOk &&
      rebooted.trainer->LoadState(accepted.data(), reopened.Length()) == kTfLiteOk) {
    std::vector<float> after_reboot(out.size());
    rebooted.trainer->SetInput(&heldout.x[0]);
    same = rebooted.trainer->Predict(after_reboot.data()) == kTfLiteOk &&
           std::memcmp(after_reboot.data(), before_reboot.data(), out.size() * 4) == 0;
  }
  // The counters came back from flash too.
  const tflmt::Trainer::Counters r = rebooted.trainer->GetCounters();
  std::printf("reboot sequence %u same_predictions %d counters %u %u %u %u %u\n",
              reopened.Sequence(), same ? 1 : 0, r.steps, r.skipped_updates,
              r.skipped_samples, r.rejected_episodes, r.rollbacks);
  return 0;
}
