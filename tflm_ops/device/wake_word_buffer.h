// tflmt::FeatureRing and tflmt::RepeatLabels: the data side of "the wake word
// was missed, the user repeats it while holding a button".
//
// A streaming wake-word model (microWakeWord: int8 input [1, 3, 40], three
// feature frames per invocation) sees every invocation once. To learn from a
// repeat the device must keep the last few seconds of what it saw: FeatureRing
// holds the input tensor's bytes of the last Capacity() invocations, oldest
// overwritten first. Push the input after every inference:
//
//   static uint8_t ring_bytes[100 * 120];       // 3 s of hey_jarvis input
//   tflmt::FeatureRing ring;
//   ring.Init(ring_bytes, sizeof(ring_bytes), trainer.InputBytes());
//   // every invocation:
//   ... fill the input tensor, interpreter.Invoke() ...
//   ring.Push(interpreter.input(0)->data.raw);
//   // button pressed / released:
//   const uint32_t press = ring.Pushed();   ...   const uint32_t release = ring.Pushed();
//
// RepeatLabels then says which of the held invocations to train as "the wake
// word just ended" (label 1), which as "no wake word" (0) and which to run
// without a label (kIgnoreLabel: inference mode, the stream still advances).
// The word's end is found from the features themselves: the last invocation
// in the held span whose mean feature stands `speech_margin` above the
// span's quietest invocation (a loudness threshold, no model needed). The
// positive window is [end + window_start, end + window_end), the invocations
// after the word where the model should fire, as the host example labels its
// clips (examples/wake_word/data.py: WINDOW_START, WINDOW_END).
// device/wake_word_trainer.h replays the ring through the model with these
// labels.
//
// Device code: no heap (the caller owns the storage), no exceptions, no
// mutable globals, no TFLM headers.
#ifndef TFLM_OPS_DEVICE_WAKE_WORD_BUFFER_H_
#define TFLM_OPS_DEVICE_WAKE_WORD_BUFFER_H_

#include <cstddef>
#include <cstdint>

namespace tflmt {

class FeatureRing {
 public:
  // Uses storage[0, storage_bytes) for floor(storage_bytes / invocation_bytes)
  // invocations. False (and the ring unusable) when not even one fits or a
  // size is zero.
  bool Init(uint8_t* storage, size_t storage_bytes, size_t invocation_bytes);

  size_t Capacity() const { return capacity_; }
  size_t Count() const { return count_; }  // invocations held (<= Capacity)
  size_t InvocationBytes() const { return invocation_bytes_; }
  // Invocations pushed since Init (or Clear): a clock to mark events with.
  uint32_t Pushed() const { return pushed_; }

  // Copies one invocation's input bytes in, over the oldest when full.
  void Push(const void* invocation);
  // The i-th held invocation, 0 the oldest; nullptr when i >= Count().
  const uint8_t* Get(size_t i) const;
  // Position in [0, Count()) of the invocation pushed when Pushed() was
  // `clock`, or -1 when it is no longer (or not yet) held.
  long IndexOf(uint32_t clock) const;
  // Forgets every invocation (e.g. after learning from them).
  void Clear();

 private:
  uint8_t* storage_ = nullptr;
  size_t invocation_bytes_ = 0;
  size_t capacity_ = 0;
  size_t count_ = 0;
  size_t next_ = 0;  // slot the next Push writes
  uint32_t pushed_ = 0;
};

// Label values RepeatLabels writes (int8: one byte per held invocation).
constexpr int8_t kIgnoreLabel = -1;

struct RepeatLabelConfig {
  // The positive window, in invocations after the word's last loud one.
  int32_t window_start = 2;
  int32_t window_end = 14;  // exclusive
  // How far (in the input's int8 steps) an invocation's mean feature must
  // stand above the held span's quietest invocation to count as speech.
  int32_t speech_margin = 20;
  // Label of the invocations before the button press: kIgnoreLabel (they may
  // hold the missed attempt) or 0 (the firmware knows they hold no wake word).
  int8_t before_press = kIgnoreLabel;
};

struct RepeatLabelResult {
  long speech_end = -1;    // ring index of the word's last loud invocation
  size_t positives = 0;    // invocations labelled 1
  size_t negatives = 0;    // invocations labelled 0
};

// Labels every held invocation (labels[0, ring.Count())) for a repeat spoken
// while the button was held: from the invocation pushed at clock `press` up
// to (not including) the one pushed at clock `release`. False, with labels
// all kIgnoreLabel where they fit, when `labels_size` < ring.Count(), the
// span is empty or no longer held in the ring, or no invocation in it stands
// out as speech. The ring must hold int8 inputs. The positive window may run past
// the release (the model fires after the word) but not past the newest held
// invocation.
bool RepeatLabels(const FeatureRing& ring, uint32_t press, uint32_t release,
                  const RepeatLabelConfig& config, int8_t* labels,
                  size_t labels_size, RepeatLabelResult* result);

}  // namespace tflmt

#endif  // TFLM_OPS_DEVICE_WAKE_WORD_BUFFER_H_
