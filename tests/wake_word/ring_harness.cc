// Host harness for tflmt::FeatureRing and tflmt::RepeatLabels
// (tests/test_wake_word_device.py builds it with ASan/UBSan).
//
//   ring_harness STREAM CAPACITY INVOCATION_BYTES PRESS RELEASE
//                WINDOW_START WINDOW_END MARGIN BEFORE_PRESS
//
// STREAM is a file of int8 invocations pushed in order. The storage is
// allocated to the exact byte (CAPACITY * INVOCATION_BYTES) so that ASan
// catches any access past it. Prints, one per line:
//   count C / pushed P / index PRESS_INDEX RELEASE_INDEX
//   held i FIRST_BYTE BYTE_SUM        (for each held invocation, oldest first)
//   labels ok|fail END POSITIVES NEGATIVES L0 L1 ...
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "device/wake_word_buffer.h"

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr, "usage: see the header comment\n");
    return 2;
  }
  const size_t capacity = std::strtoul(argv[2], nullptr, 10);
  const size_t bytes = std::strtoul(argv[3], nullptr, 10);
  const uint32_t press = std::strtoul(argv[4], nullptr, 10);
  const uint32_t release = std::strtoul(argv[5], nullptr, 10);
  tflmt::RepeatLabelConfig config;
  config.window_start = std::atoi(argv[6]);
  config.window_end = std::atoi(argv[7]);
  config.speech_margin = std::atoi(argv[8]);
  config.before_press = static_cast<int8_t>(std::atoi(argv[9]));

  std::FILE* file = std::fopen(argv[1], "rb");
  if (file == nullptr) return 2;
  // Heap here is the test's, not the helper's: exact-size blocks for ASan.
  uint8_t* storage = static_cast<uint8_t*>(std::malloc(capacity * bytes + 1));
  uint8_t* invocation = static_cast<uint8_t*>(std::malloc(bytes));
  tflmt::FeatureRing ring;
  // One byte short of capacity + 1 invocations: the ring must use capacity.
  if (!ring.Init(storage, capacity * bytes + 1, bytes)) return 3;
  if (ring.Capacity() != capacity) return 4;
  while (std::fread(invocation, 1, bytes, file) == bytes) ring.Push(invocation);
  std::fclose(file);

  std::printf("count %zu\npushed %u\nindex %ld %ld\n", ring.Count(),
              ring.Pushed(), ring.IndexOf(press), ring.IndexOf(release - 1u));
  for (size_t i = 0; i < ring.Count(); ++i) {
    const uint8_t* held = ring.Get(i);
    long sum = 0;
    for (size_t j = 0; j < bytes; ++j) sum += static_cast<int8_t>(held[j]);
    std::printf("held %zu %d %ld\n", i, static_cast<int8_t>(held[0]), sum);
  }
  if (ring.Get(ring.Count()) != nullptr) return 5;

  int8_t* labels =
      static_cast<int8_t*>(std::malloc(ring.Count() > 0 ? ring.Count() : 1));
  tflmt::RepeatLabelResult result;
  const bool ok = tflmt::RepeatLabels(ring, press, release, config, labels,
                                      ring.Count(), &result);
  std::printf("labels %s %ld %zu %zu", ok ? "ok" : "fail", result.speech_end,
              result.positives, result.negatives);
  for (size_t i = 0; i < ring.Count(); ++i) std::printf(" %d", labels[i]);
  std::printf("\n");
  // A labels array one short is refused.
  if (ring.Count() > 0 &&
      tflmt::RepeatLabels(ring, press, release, config, labels,
                          ring.Count() - 1, &result)) {
    return 6;
  }
  std::free(labels);
  std::free(invocation);
  std::free(storage);
  return 0;
}
