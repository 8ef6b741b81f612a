// Drives tflmt::ReplayBuffer (tflm_ops/device/replay.cc) through a scripted
// sequence and prints every decision, for tests/test_continual.py to compare
// with tflm_train.continual.ReplayBuffer.
//
//   replay_harness BUDGET INPUT_BYTES TARGET_BYTES SEED EVERY OFFERS STEPS
//
// Record i holds bytes (i + j) & 0xFF. Prints one line per offer
// ("offer <slot>"), then per step: "due <0|1>" and, when due, "pick <index of
// the sample held>" (read back from the record's first bytes).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "device/replay.h"

namespace {
uint8_t storage[1 << 16];
uint8_t input[4096];
uint8_t target[64];
}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) return 2;
  const size_t budget = std::strtoul(argv[1], nullptr, 10);
  const size_t input_bytes = std::strtoul(argv[2], nullptr, 10);
  const size_t target_bytes = std::strtoul(argv[3], nullptr, 10);
  const uint32_t seed = std::strtoul(argv[4], nullptr, 10);
  const uint32_t every = std::strtoul(argv[5], nullptr, 10);
  const int offers = std::atoi(argv[6]);
  const int steps = std::atoi(argv[7]);
  if (budget > sizeof(storage) || input_bytes > sizeof(input) ||
      target_bytes > sizeof(target) || target_bytes < 4) {
    return 2;
  }
  tflmt::ReplayBuffer replay;
  if (!replay.Init(storage, budget, input_bytes, target_bytes, seed, every)) {
    std::printf("init failed\n");
    return 0;
  }
  std::printf("capacity %zu\n", replay.Capacity());
  for (int i = 0; i < offers; ++i) {
    for (size_t j = 0; j < input_bytes; ++j) input[j] = (i + j) & 0xFF;
    const int32_t index = i;
    std::memcpy(target, &index, 4);
    std::printf("offer %d\n", replay.Offer(input, target));
  }
  for (int s = 0; s < steps; ++s) {
    const bool due = replay.ReplayDue();
    std::printf("due %d\n", due ? 1 : 0);
    if (!due) continue;
    const uint8_t* in;
    const uint8_t* tg;
    if (!replay.Pick(&in, &tg)) return 3;
    int32_t held;
    std::memcpy(&held, tg, 4);
    if (in[0] != (held & 0xFF)) return 4;  // input and target stay together
    std::printf("pick %d\n", held);
  }
  return 0;
}
