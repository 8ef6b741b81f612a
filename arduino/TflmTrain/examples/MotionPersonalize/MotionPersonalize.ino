// MotionPersonalize: teach the BasicMotions activity model (standing, walking,
// running, badminton) your own way of moving, on an IMU board of the Nano 33
// BLE Sense class, and keep what it learned across resets.
//
//   label button (pin 3) or Serial '0'..'3'  choose the activity to record
//   record button (pin 2) or Serial 'r'      record a 10 s window (100 samples at 10 Hz)
//   Serial 't'  train the LoRA adapter on the recorded windows, save it to flash
//   Serial 'a'  accuracy on the recorded windows
//   Serial 'd'  load the 12 bundled demo windows (the example's other-wrist wearer)
//   Serial 'x'  forget the adapter (back to the base model) and the saved state
//
// The model is tflm_train/examples/basic_motions (6 channels x 100 samples)
// converted with LoRA on its last three layers and Adam; motions_data.h comes
// from `python arduino/generate.py`. The adapter (its training state) is saved
// through TflmTrainStorage: internal flash on mbed boards, a RAM stand-in
// elsewhere.
//
// Nano 33 BLE Sense Rev2: define TFLMT_IMU_BMI270 (its IMU library has the
// same calls).
#include <TflmTrain.h>
#include <TflmTrainStorage.h>

#ifdef TFLMT_IMU_BMI270
#include <Arduino_BMI270_BMM150.h>
#else
#include <Arduino_LSM9DS1.h>
#endif

#include "motions_data.h"

const uint8_t kRecordPin = 2;
const uint8_t kLabelPin = 3;
const char* const kActivities[] = {"standing", "walking", "running", "badminton"};
const int kClasses = 4;
const size_t kSteps = 100;     // samples per window
const size_t kChannels = 6;    // ax ay az gx gy gz
const unsigned long kSamplePeriodMs = 100;  // 10 Hz, as the archive
const size_t kMaxWindows = 16;
const int kEpochs = 40;        // as the example's README
const float kLearningRate = 0.03f;

// The model's preprocessing: each channel standardized with the training
// split's mean and standard deviation (BasicMotions TRAIN, computed in
// float64; they reproduce the example's base_test.npz exactly).
const float kMean[kChannels] = {2.55275963f, -1.30393677f, -1.0265805f, 0.019051104f, -0.0239576965f, -0.0557896638f};
const float kStd[kChannels] = {7.07230565f, 6.79408756f, 3.54637348f, 2.11192018f, 1.82075064f, 3.51658593f};
// Assumption (the archive does not state units): Android sensor units, m/s^2
// and rad/s. Arduino's IMU libraries give g and degrees per second. Training
// the adapter on your own windows absorbs what this gets wrong.
const float kAccelToArchive = 9.80665f;
const float kGyroToArchive = 3.14159265f / 180.0f;

const size_t kArenaBytes = 40 * 1024;
alignas(16) static uint8_t g_arena[kArenaBytes];
static TflmTrainer g_trainer;
static TflmTrainStorage g_storage;
// The saved adapter passes through here (Adam state: 12,480 B).
const size_t kStateCapacity = 16 * 1024;
alignas(4) static uint8_t g_state[kStateCapacity];

static float g_windows[kMaxWindows][kSteps * kChannels];
static int32_t g_labels[kMaxWindows];
static size_t g_window_count = 0;
static int g_label = 0;

static bool Pressed(uint8_t pin) {
  if (digitalRead(pin) != LOW) return false;
  delay(30);  // debounce
  while (digitalRead(pin) == LOW) {
  }
  return true;
}

static void PrintLabel() {
  Serial.print("label: ");
  Serial.println(kActivities[g_label]);
}

static void Record() {
  if (g_window_count == kMaxWindows) {
    Serial.println("no room for another window (press 'x' to start over)");
    return;
  }
  Serial.print("recording ");
  Serial.print(kActivities[g_label]);
  Serial.println(" for 10 s...");
  float* window = g_windows[g_window_count];
  unsigned long next = millis();
  for (size_t t = 0; t < kSteps; ++t) {
    while (static_cast<long>(millis() - next) < 0) {
    }
    next += kSamplePeriodMs;
    float raw[kChannels] = {};
    IMU.readAcceleration(raw[0], raw[1], raw[2]);
    IMU.readGyroscope(raw[3], raw[4], raw[5]);
    for (size_t c = 0; c < kChannels; ++c) {
      const float unit = c < 3 ? kAccelToArchive : kGyroToArchive;
      window[t * kChannels + c] = (raw[c] * unit - kMean[c]) / kStd[c];
    }
  }
  g_labels[g_window_count++] = g_label;
  Serial.print("recorded window ");
  Serial.println(static_cast<unsigned long>(g_window_count));
}

static void LoadDemo() {
  g_window_count = kDemoWindowCount < kMaxWindows ? kDemoWindowCount : kMaxWindows;
  for (size_t w = 0; w < g_window_count; ++w) {
    memcpy(g_windows[w], &kDemoWindows[w * kSteps * kChannels], sizeof(g_windows[w]));
    g_labels[w] = kDemoLabels[w];
  }
  Serial.print("loaded ");
  Serial.print(static_cast<unsigned long>(g_window_count));
  Serial.println(" demo windows");
}

static void ReportAccuracy() {
  if (g_window_count == 0) {
    Serial.println("no windows recorded");
    return;
  }
  size_t correct = 0;
  for (size_t w = 0; w < g_window_count; ++w) {
    const int predicted = g_trainer.classify(g_windows[w]);
    if (predicted < 0) {
      Serial.println(g_trainer.errorMessage());
      return;
    }
    correct += predicted == g_labels[w] ? 1 : 0;
  }
  Serial.print("accuracy on the recorded windows: ");
  Serial.print(static_cast<unsigned long>(correct));
  Serial.print("/");
  Serial.print(static_cast<unsigned long>(g_window_count));
  Serial.print(" (");
  Serial.print(100.0 * static_cast<double>(correct) / static_cast<double>(g_window_count), 1);
  Serial.println("%)");
}

static void SaveAdapter() {
  const size_t bytes = g_trainer.stateBytes();
  if (!g_trainer.saveState(g_state, kStateCapacity) || !g_storage.save(g_state, bytes)) {
    Serial.println("could not save the adapter");
    return;
  }
  Serial.print("adapter saved (");
  Serial.print(static_cast<unsigned long>(bytes));
  Serial.println(" B)");
}

static void Train() {
  if (g_window_count == 0) {
    Serial.println("record some windows first");
    return;
  }
  ReportAccuracy();
  for (int epoch = 0; epoch < kEpochs; ++epoch) {
    float total = 0.0f;
    for (size_t w = 0; w < g_window_count; ++w) {
      float loss = 0.0f;
      if (!g_trainer.train(g_windows[w], g_labels[w], kLearningRate, &loss)) {
        Serial.println(g_trainer.errorMessage());
        return;
      }
      total += loss;
    }
    if (epoch == 0 || epoch + 1 == kEpochs || (epoch + 1) % 10 == 0) {
      Serial.print("epoch ");
      Serial.print(epoch + 1);
      Serial.print(" mean loss ");
      Serial.println(static_cast<double>(total / static_cast<float>(g_window_count)), 4);
    }
  }
  ReportAccuracy();
  SaveAdapter();
}

static void Forget() {
  g_trainer.reset();
  g_storage.erase();
  g_window_count = 0;
  Serial.println("back to the base model; recordings cleared");
}

// A saved adapter is only trusted once the model has checked it (model hash,
// layout, CRC) on its first invocation.
static void RestoreAdapter() {
  const size_t bytes = g_trainer.stateBytes();
  if (!g_storage.load(g_state, bytes)) {
    Serial.println("no saved adapter: base model");
    return;
  }
  static float probe[kSteps * kChannels];  // zeros: any input will do
  float scores[kClasses];
  if (g_trainer.loadState(g_state, bytes) && g_trainer.predict(probe, scores)) {
    Serial.println("saved adapter restored");
  } else {
    g_trainer.reset();
    Serial.println("saved adapter rejected (another model, or damaged): base model");
  }
}

static void Halt(const char* what) {
  Serial.println(what);
  for (;;) delay(1000);
}

void setup() {
  Serial.begin(115200);
  while (!Serial) {
  }
  pinMode(kRecordPin, INPUT_PULLUP);
  pinMode(kLabelPin, INPUT_PULLUP);
  if (!IMU.begin()) Halt("IMU not found");
  if (!g_trainer.begin(motions_lora, g_arena, kArenaBytes)) Halt(g_trainer.errorMessage());
  if (g_trainer.inputCount() != kSteps * kChannels || g_trainer.outputCount() != kClasses) {
    Halt("the model is not the 6 x 100 -> 4 BasicMotions model");
  }
  Serial.print("arena used ");
  Serial.print(static_cast<unsigned long>(g_trainer.arenaUsedBytes()));
  Serial.print(" B; storage: ");
  Serial.println(TflmTrainStorage::backendName());
  if (g_trainer.stateBytes() > kStateCapacity || !g_storage.begin(g_trainer.stateBytes())) {
    Halt("no room to keep the adapter");
  }
  RestoreAdapter();
  PrintLabel();
}

void loop() {
  if (Pressed(kLabelPin)) {
    g_label = (g_label + 1) % kClasses;
    PrintLabel();
  }
  if (Pressed(kRecordPin)) Record();
  if (Serial.available() <= 0) return;
  const int command = Serial.read();
  if (command >= '0' && command < '0' + kClasses) {
    g_label = command - '0';
    PrintLabel();
  } else if (command == 'r') {
    Record();
  } else if (command == 't') {
    Train();
  } else if (command == 'a') {
    ReportAccuracy();
  } else if (command == 'd') {
    LoadDemo();
  } else if (command == 'x') {
    Forget();
  }
}
