// SelfTest: trains the bundled digits example on the board and prints every
// step's loss next to the loss the host computed for the same step
// (tflm_train.trainer.TrainableModel over TFLM's x86 interpreter), with
// "match" when the two float32 values are bit-identical and "differ" (and the
// difference) otherwise. self_test_data.h comes from `python arduino/generate.py`.
//
// Expect "match" on most steps; Cortex-M4F's newlib expf/logf can differ from
// the host's in the last bit, which shows as a few "differ" lines of ~1e-7.
#include <TflmTrain.h>

#include "self_test_data.h"

const size_t kArenaBytes = 16 * 1024;
alignas(16) static uint8_t g_arena[kArenaBytes];
static TflmTrainer g_trainer;

static uint32_t FloatBits(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof(bits));
  return bits;
}

static float BitsFloat(uint32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}

static void Halt(const char* what) {
  Serial.print("SelfTest: ");
  Serial.println(what);
  Serial.println(g_trainer.errorMessage());
  for (;;) delay(1000);
}

void setup() {
  Serial.begin(115200);
  while (!Serial) {
  }
  if (!g_trainer.begin(digits_lora, g_arena, kArenaBytes)) Halt("begin failed");
  Serial.print("SelfTest: arena used ");
  Serial.print(static_cast<unsigned long>(g_trainer.arenaUsedBytes()));
  Serial.print(" B of ");
  Serial.print(static_cast<unsigned long>(kArenaBytes));
  Serial.print(", state ");
  Serial.print(static_cast<unsigned long>(g_trainer.stateBytes()));
  Serial.println(" B");
  if (g_trainer.inputCount() != kFeatureCount) Halt("the model's input size differs from the samples'");

  size_t matches = 0;
  size_t step = 0;
  const unsigned long start = millis();
  for (int epoch = 0; epoch < kEpochs; ++epoch) {
    for (size_t i = 0; i < kSampleCount; ++i, ++step) {
      float loss = 0.0f;
      if (!g_trainer.train(&kSamples[i * kFeatureCount], kLabels[i], kLearningRate, &loss)) Halt("train failed");
      const float host = BitsFloat(kHostLossBits[step]);
      const bool same = FloatBits(loss) == kHostLossBits[step];
      matches += same ? 1 : 0;
      Serial.print("step ");
      Serial.print(static_cast<unsigned long>(step + 1));
      Serial.print(" loss ");
      Serial.print(loss, 7);
      Serial.print(" host ");
      Serial.print(host, 7);
      if (same) {
        Serial.println(" match");
      } else {
        Serial.print(" differ by ");
        Serial.println(static_cast<double>(loss - host), 9);
      }
    }
  }
  const unsigned long elapsed = millis() - start;
  Serial.print("SelfTest: ");
  Serial.print(static_cast<unsigned long>(matches));
  Serial.print(" of ");
  Serial.print(static_cast<unsigned long>(step));
  Serial.print(" losses bit-identical to the host, ");
  Serial.print(elapsed);
  Serial.println(" ms");
  Serial.println(matches == step ? "SelfTest: PASS" : "SelfTest: DIFFER");
}

void loop() { delay(1000); }
