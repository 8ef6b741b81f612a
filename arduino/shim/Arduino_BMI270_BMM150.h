// Arduino_BMI270_BMM150 (Nano 33 BLE Sense Rev2) has the same IMU calls as
// the LSM9DS1 library of the first revision: one shim serves both.
#include "Arduino_LSM9DS1.h"
