// The IMU calls of Arduino's LSM9DS1 library (Nano 33 BLE Sense) and of
// Arduino_BMI270_BMM150 (Rev2), which share them: accelerometer in g,
// gyroscope in degrees per second. Samples come from a weak hook.
#ifndef TFLM_TRAIN_ARDUINO_SHIM_IMU_H_
#define TFLM_TRAIN_ARDUINO_SHIM_IMU_H_

#include "Arduino.h"

extern "C" {
// Fills the six values (ax, ay, az in g; gx, gy, gz in deg/s); default: at rest.
void tflmt_shim_imu_read(float values[6]);
}

class ShimIMU {
 public:
  int begin() { return 1; }
  void end() {}
  int accelerationAvailable() { return 1; }
  int gyroscopeAvailable() { return 1; }
  float accelerationSampleRate() { return 119.0f; }
  int readAcceleration(float& x, float& y, float& z);
  int readGyroscope(float& x, float& y, float& z);

 private:
  float sample_[6] = {};
};

extern ShimIMU IMU;

#endif  // TFLM_TRAIN_ARDUINO_SHIM_IMU_H_
