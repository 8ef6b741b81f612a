// Runs tflmt::EpisodeMonitor over commands on stdin and prints each verdict,
// so tests/test_episodes.py can compare it with tflm_train.episodes'.
//   b <skipped_updates> <baseline>   Begin
//   O <loss> <finite 0/1> <skipped_updates> <saturated 0/1>   Observe
//   f <committed_loss> <new_loss>    Finish
// Values are C99 hex floats, so every bit pattern crosses exactly.
#include <cstdio>
#include <cstdlib>

#include "device/episode.h"

int main() {
  tflmt::EpisodeMonitor monitor{tflmt::EpisodeLimits()};
  char command[4], a[64], b[64];
  unsigned c;
  while (std::scanf("%3s", command) == 1) {
    if (command[0] == 'b' && std::scanf("%u %63s", &c, a) == 2) {
      monitor.Begin(c, std::strtof(a, nullptr));
    } else if (command[0] == 'O') {
      unsigned finite, skipped, saturated;
      if (std::scanf("%63s %u %u %u", a, &finite, &skipped, &saturated) != 4) return 2;
      std::printf("%d\n", static_cast<int>(monitor.Observe(
                              std::strtof(a, nullptr), finite != 0, skipped,
                              saturated != 0)));
    } else if (command[0] == 'f' && std::scanf("%63s %63s", a, b) == 2) {
      std::printf("%d\n", static_cast<int>(monitor.Finish(
                              std::strtof(a, nullptr), std::strtof(b, nullptr))));
    } else {
      return 2;
    }
  }
  return 0;
}
