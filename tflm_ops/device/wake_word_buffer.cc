#include "device/wake_word_buffer.h"

#include <cstring>

namespace tflmt {

bool FeatureRing::Init(uint8_t* storage, size_t storage_bytes,
                       size_t invocation_bytes) {
  storage_ = nullptr;
  capacity_ = 0;
  Clear();
  if (storage == nullptr || invocation_bytes == 0 ||
      storage_bytes < invocation_bytes) {
    return false;
  }
  storage_ = storage;
  invocation_bytes_ = invocation_bytes;
  capacity_ = storage_bytes / invocation_bytes;
  return true;
}

void FeatureRing::Clear() {
  count_ = 0;
  next_ = 0;
  pushed_ = 0;
}

void FeatureRing::Push(const void* invocation) {
  if (capacity_ == 0 || invocation == nullptr) return;
  std::memcpy(storage_ + next_ * invocation_bytes_, invocation,
              invocation_bytes_);
  next_ = (next_ + 1) % capacity_;
  if (count_ < capacity_) ++count_;
  ++pushed_;
}

const uint8_t* FeatureRing::Get(size_t i) const {
  if (i >= count_) return nullptr;
  // The oldest sits at next_ once the ring is full, at 0 before.
  const size_t oldest = count_ == capacity_ ? next_ : 0;
  return storage_ + ((oldest + i) % capacity_) * invocation_bytes_;
}

long FeatureRing::IndexOf(uint32_t clock) const {
  // Unsigned distance back from the newest: wraps correctly past 2^32 pushes.
  const uint32_t back = pushed_ - 1u - clock;
  if (count_ == 0 || back >= count_) return -1;
  return static_cast<long>(count_ - 1u - back);
}

namespace {

// Mean of one invocation's int8 features, in int8 steps.
int32_t MeanLevel(const uint8_t* invocation, size_t bytes) {
  int32_t sum = 0;
  for (size_t i = 0; i < bytes; ++i) {
    sum += static_cast<int8_t>(invocation[i]);
  }
  return sum / static_cast<int32_t>(bytes);
}

}  // namespace

bool RepeatLabels(const FeatureRing& ring, uint32_t press, uint32_t release,
                  const RepeatLabelConfig& config, int8_t* labels,
                  size_t labels_size, RepeatLabelResult* result) {
  RepeatLabelResult out;
  const size_t count = ring.Count();
  if (labels == nullptr) return false;
  for (size_t i = 0; i < labels_size && i < count; ++i) {
    labels[i] = kIgnoreLabel;
  }
  if (result != nullptr) *result = out;
  if (labels_size < count || release == press ||
      release - press > ring.Pushed() - press ||  // release before press
      config.window_end <= config.window_start) {
    return false;
  }
  const long first = ring.IndexOf(press);
  const long last = ring.IndexOf(release - 1u);
  if (first < 0 || last < 0) return false;

  const size_t bytes = ring.InvocationBytes();
  int32_t quietest = 127;
  for (long i = first; i <= last; ++i) {
    const int32_t level = MeanLevel(ring.Get(static_cast<size_t>(i)), bytes);
    if (level < quietest) quietest = level;
  }
  long end = -1;
  for (long i = last; i >= first; --i) {
    if (MeanLevel(ring.Get(static_cast<size_t>(i)), bytes) >=
        quietest + config.speech_margin) {
      end = i;
      break;
    }
  }
  if (end < 0) return false;

  if (config.before_press == 0) {
    for (long i = 0; i < first; ++i) labels[i] = 0;
    out.negatives = static_cast<size_t>(first);
  }
  const long window_first = end + config.window_start;
  const long window_last = end + config.window_end;  // exclusive
  for (long i = window_first < 0 ? 0 : window_first;
       i < window_last && i < static_cast<long>(count); ++i) {
    if (labels[i] == 0) --out.negatives;
    labels[i] = 1;
    ++out.positives;
  }
  out.speech_end = end;
  if (result != nullptr) *result = out;
  return out.positives > 0;
}

}  // namespace tflmt
