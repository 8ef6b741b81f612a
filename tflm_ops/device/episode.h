// tflmt::EpisodeMonitor: decides, during and after one training episode,
// whether the new adapter is kept, rejected or rolled back. Pure arithmetic
// on the losses (no TFLM), so it is tested on the host against its Python
// twin, tflm_train.episodes.EpisodeMonitor (same float32 operations, same
// order, same verdicts).
//
// An episode on the device:
//   trainer.SaveState(committed, n);               // or: it is in the store
//   float before = held-out mean loss (Trainer::EvaluateLoss per sample);
//   monitor.Begin(trainer.GetCounters().skipped_updates, before);
//   for each new sample:
//     trainer.SetInput(x); trainer.SetLabel(y); trainer.TrainStep(lr, &loss);
//     v = monitor.Observe(loss, sample_finite, trainer.GetCounters().
//                         skipped_updates, trainer.OutputSaturated());
//     if (v != kContinue) break;                   // diverged: stop now
//   if (v == kContinue) v = monitor.Finish(before, held-out mean loss after);
//   if (v == kAccept) store.Commit(new state) else
//     trainer.Restore(committed, n, v);            // counted in the header
//
// Divergence: a non-finite loss for a finite sample, an update the optimizer
// dropped as non-finite, the recent loss (a short EMA) above `ratio` x the
// running mean (a long EMA that starts at the committed adapter's held-out
// loss) for `patience` steps in a row, or an output at the ends of its range
// in every step of the episode. Device code: no heap, no globals.
#ifndef TFLM_OPS_DEVICE_EPISODE_H_
#define TFLM_OPS_DEVICE_EPISODE_H_

#include <cstdint>

namespace tflmt {

enum class EpisodeVerdict : uint8_t {
  kContinue = 0,
  kAccept = 1,
  kReject = 2,        // held-out loss worse than the committed adapter's
  kLossDiverged = 3,  // recent loss far above its running mean
  kNotFinite = 4,     // non-finite loss, or a dropped non-finite update
  kSaturated = 5,     // output at the ends of its range all episode
};

// Rejected -> "rejected episodes"; the three divergences -> "rollbacks".
inline bool IsRollback(EpisodeVerdict v) {
  return v == EpisodeVerdict::kLossDiverged ||
         v == EpisodeVerdict::kNotFinite || v == EpisodeVerdict::kSaturated;
}

struct EpisodeLimits {
  float divergence_ratio = 4.0f;
  uint32_t warmup_steps = 4;
  uint32_t patience = 4;
  float recent_decay = 0.9f;
  float mean_decay = 0.95f;
  float tolerance = 0.0f;  // held-out loss may exceed the committed one by this
};

class EpisodeMonitor {
 public:
  explicit EpisodeMonitor(const EpisodeLimits& limits) : limits_(limits) {}

  // baseline_loss: the committed adapter's held-out mean loss (NaN: the
  // running mean starts at the first loss).
  void Begin(uint32_t skipped_updates, float baseline_loss);
  EpisodeVerdict Observe(float loss, bool sample_finite,
                         uint32_t skipped_updates, bool output_saturated);
  EpisodeVerdict Finish(float committed_loss, float new_loss) const;

  uint32_t Steps() const { return steps_; }
  float RunningMean() const { return mean_; }

 private:
  EpisodeLimits limits_;
  uint32_t steps_ = 0;
  uint32_t over_ = 0;
  uint32_t skipped_updates_at_start_ = 0;
  float mean_ = 0.0f;
  float recent_ = 0.0f;
  bool has_baseline_ = false;
  bool all_saturated_ = true;
};

}  // namespace tflmt

#endif  // TFLM_OPS_DEVICE_EPISODE_H_
