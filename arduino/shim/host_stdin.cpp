// Host runs of a sketch: Serial input comes from stdin (a scripted session),
// the end of input reads as "nothing available".
#include <stdio.h>

#include "Arduino.h"

extern "C" int tflmt_shim_read(void) {
  const int c = getchar();
  return c == EOF ? -1 : c;
}
