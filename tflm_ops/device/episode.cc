#include "device/episode.h"

#include <cmath>

namespace tflmt {

void EpisodeMonitor::Begin(uint32_t skipped_updates, float baseline_loss) {
  steps_ = 0;
  over_ = 0;
  mean_ = recent_ = baseline_loss;
  has_baseline_ = std::isfinite(baseline_loss) && baseline_loss > 0.0f;
  skipped_updates_at_start_ = skipped_updates;
  all_saturated_ = true;
}

EpisodeVerdict EpisodeMonitor::Observe(float loss, bool sample_finite,
                                       uint32_t skipped_updates,
                                       bool output_saturated) {
  // A bad sample was skipped and counted by the kernels: not a divergence.
  if (!sample_finite) return EpisodeVerdict::kContinue;
  if (skipped_updates != skipped_updates_at_start_ || !std::isfinite(loss)) {
    return EpisodeVerdict::kNotFinite;
  }
  all_saturated_ = all_saturated_ && output_saturated;
  if (steps_ == 0 && !has_baseline_) mean_ = recent_ = loss;
  recent_ = limits_.recent_decay * recent_ +
            (1.0f - limits_.recent_decay) * loss;
  ++steps_;
  if (steps_ > limits_.warmup_steps &&
      recent_ > limits_.divergence_ratio * mean_) {
    ++over_;  // the running mean does not follow a rising loss up
    return over_ >= limits_.patience ? EpisodeVerdict::kLossDiverged
                                     : EpisodeVerdict::kContinue;
  }
  over_ = 0;
  mean_ = limits_.mean_decay * mean_ + (1.0f - limits_.mean_decay) * loss;
  return EpisodeVerdict::kContinue;
}

EpisodeVerdict EpisodeMonitor::Finish(float committed_loss,
                                      float new_loss) const {
  if (steps_ > 0 && all_saturated_) return EpisodeVerdict::kSaturated;
  // Written so that a NaN held-out loss rejects.
  if (!(new_loss <= committed_loss + limits_.tolerance)) {
    return EpisodeVerdict::kReject;
  }
  return EpisodeVerdict::kAccept;
}

}  // namespace tflmt
