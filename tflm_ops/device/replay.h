// tflmt::ReplayBuffer: original-task samples kept on the device, against
// forgetting. While a device fine-tunes on new data, one stored sample of the
// task the model was built for is trained every `replay_every` new samples,
// so the adapter keeps serving both.
//
//   static uint8_t replay_bytes[8192];            // the byte budget, yours
//   tflmt::ReplayBuffer replay;
//   replay.Init(replay_bytes, sizeof(replay_bytes), trainer.InputBytes(),
//               sizeof(int32_t), /*seed=*/0, /*replay_every=*/1);
//   // while original-task samples pass by (factory data, confirmed ones):
//   replay.Offer(input_tensor_bytes, &label);
//   // training on a new sample:
//   trainer.SetInput(x);  trainer.SetLabel(y);  trainer.TrainStep(lr, &loss);
//   if (replay.ReplayDue()) {
//     const uint8_t* input;  const uint8_t* target;
//     replay.Pick(&input, &target);
//     trainer.SetInputBytes(input, trainer.InputBytes());
//     int32_t label;  memcpy(&label, target, 4);
//     trainer.SetLabel(label);  trainer.TrainStep(lr, &loss);
//   }
//
// A record is the model's input tensor as it holds the sample (int8 for an
// int8 model: no float copy) followed by the target (an int32 label for
// cross-entropy, or the float32 target values). The buffer holds
// floor(budget / record bytes) records; which samples stay is reservoir
// sampling (Algorithm R): after n offers each of them is held with the same
// probability capacity / n, whatever the order they came in. The random
// numbers are a seeded xorshift32, so tflm_train.continual.ReplayBuffer (the
// same buffer in Python, used by `tflm-train fit --replay-data`) makes the
// same decisions for the same seed and the same calls.
//
// Device code: no heap (the caller owns the storage), no exceptions, no
// TFLM headers (usable with any interpreter glue).
#ifndef TFLM_OPS_DEVICE_REPLAY_H_
#define TFLM_OPS_DEVICE_REPLAY_H_

#include <cstddef>
#include <cstdint>

namespace tflmt {

class ReplayBuffer {
 public:
  // Uses storage[0, storage_bytes) for records of input_bytes + target_bytes.
  // False (and the buffer unusable) when not even one record fits, a size is
  // zero or replay_every is 0. Any seed (0 too) is fine: it is mixed first.
  bool Init(uint8_t* storage, size_t storage_bytes, size_t input_bytes,
            size_t target_bytes, uint32_t seed, uint32_t replay_every);

  size_t Capacity() const { return capacity_; }  // records that fit
  size_t Count() const { return count_; }        // records held
  uint32_t Seen() const { return seen_; }        // samples offered so far
  size_t RecordBytes() const { return input_bytes_ + target_bytes_; }

  // Offers one original-task sample: kept in a free record while there is
  // one, then in a random record with probability capacity / (seen + 1).
  // Returns the record written, or -1 when the sample was not kept (or the
  // buffer is not initialized).
  int Offer(const void* input, const void* target);

  // One held record, chosen uniformly; false when the buffer is empty.
  bool Pick(const uint8_t** input, const uint8_t** target);
  // The record at `index` (< Count()); false when out of range.
  bool Record(size_t index, const uint8_t** input,
              const uint8_t** target) const;

  // Call after each new sample trained: true on every replay_every-th call
  // (while the buffer holds something), when one Pick()ed sample should be
  // trained too.
  bool ReplayDue();

 private:
  uint32_t NextRandom();
  uint32_t RandomBelow(uint32_t n);  // uniform in [0, n)

  uint8_t* storage_ = nullptr;
  size_t input_bytes_ = 0;
  size_t target_bytes_ = 0;
  size_t capacity_ = 0;
  size_t count_ = 0;
  uint32_t seen_ = 0;
  uint32_t rng_ = 0;
  uint32_t replay_every_ = 1;
  uint32_t since_replay_ = 0;
};

}  // namespace tflmt

#endif  // TFLM_OPS_DEVICE_REPLAY_H_
