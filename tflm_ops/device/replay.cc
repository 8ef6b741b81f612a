#include "replay.h"

#include <cstring>

namespace tflmt {

namespace {
// xorshift32 has 0 as a fixed point: a state of zero becomes this one.
constexpr uint32_t kDefaultSeed = 0x9E3779B9u;

// Spreads a seed's bits over the whole word (MurmurHash3's 32-bit
// finalizer): xorshift32 started from a small seed (1, 2, ...) would give
// small first numbers, and the first samples offered would stay less often.
uint32_t MixSeed(uint32_t seed) {
  uint32_t h = seed ^ kDefaultSeed;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h != 0 ? h : kDefaultSeed;
}
}  // namespace

bool ReplayBuffer::Init(uint8_t* storage, size_t storage_bytes,
                        size_t input_bytes, size_t target_bytes, uint32_t seed,
                        uint32_t replay_every) {
  capacity_ = 0;
  count_ = 0;
  seen_ = 0;
  since_replay_ = 0;
  storage_ = nullptr;
  const size_t record = input_bytes + target_bytes;
  if (storage == nullptr || input_bytes == 0 || target_bytes == 0 ||
      replay_every == 0 || storage_bytes < record) {
    return false;
  }
  storage_ = storage;
  input_bytes_ = input_bytes;
  target_bytes_ = target_bytes;
  capacity_ = storage_bytes / record;
  rng_ = MixSeed(seed);
  replay_every_ = replay_every;
  return true;
}

uint32_t ReplayBuffer::NextRandom() {
  uint32_t x = rng_;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  rng_ = x;
  return x;
}

// Multiply-shift: no division, and the same result in Python's integers.
uint32_t ReplayBuffer::RandomBelow(uint32_t n) {
  return static_cast<uint32_t>((uint64_t{NextRandom()} * n) >> 32);
}

int ReplayBuffer::Offer(const void* input, const void* target) {
  if (storage_ == nullptr) return -1;
  size_t slot;
  if (count_ < capacity_) {
    slot = count_++;
  } else {
    // Algorithm R: the (seen+1)-th sample replaces a random record with
    // probability capacity / (seen + 1).
    slot = RandomBelow(seen_ + 1);
  }
  ++seen_;
  if (slot >= capacity_) return -1;
  uint8_t* record = storage_ + slot * RecordBytes();
  std::memcpy(record, input, input_bytes_);
  std::memcpy(record + input_bytes_, target, target_bytes_);
  return static_cast<int>(slot);
}

bool ReplayBuffer::Record(size_t index, const uint8_t** input,
                          const uint8_t** target) const {
  if (index >= count_) return false;
  const uint8_t* record = storage_ + index * RecordBytes();
  *input = record;
  *target = record + input_bytes_;
  return true;
}

bool ReplayBuffer::Pick(const uint8_t** input, const uint8_t** target) {
  if (count_ == 0) return false;
  return Record(RandomBelow(static_cast<uint32_t>(count_)), input, target);
}

bool ReplayBuffer::ReplayDue() {
  ++since_replay_;
  if (since_replay_ < replay_every_ || count_ == 0) return false;
  since_replay_ = 0;
  return true;
}

}  // namespace tflmt
