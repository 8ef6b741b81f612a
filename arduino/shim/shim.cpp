// The shim's behaviour: weak hooks with host-friendly defaults, and main().
#include <stdio.h>

#include "Arduino.h"
#include "Arduino_LSM9DS1.h"

ShimSerial Serial;
ShimIMU IMU;

extern "C" {

__attribute__((weak)) void tflmt_shim_write(const char* data, size_t size) {
  fwrite(data, 1, size, stdout);
}

__attribute__((weak)) int tflmt_shim_read(void) { return -1; }

// No clock: time moves by delay() and by one millisecond per call.
static unsigned long g_fake_millis = 0;
__attribute__((weak)) unsigned long tflmt_shim_millis(void) { return ++g_fake_millis; }

__attribute__((weak)) int tflmt_shim_digital_read(uint8_t pin) {
  (void)pin;
  return HIGH;
}

__attribute__((weak)) void tflmt_shim_imu_read(float values[6]) {
  values[0] = values[1] = 0.0f;
  values[2] = 1.0f;  // at rest: 1 g on z
  values[3] = values[4] = values[5] = 0.0f;
}

}  // extern "C"

void pinMode(uint8_t pin, uint8_t mode) {
  (void)pin;
  (void)mode;
}

int digitalRead(uint8_t pin) { return tflmt_shim_digital_read(pin); }

void digitalWrite(uint8_t pin, uint8_t value) {
  (void)pin;
  (void)value;
}

unsigned long millis() { return tflmt_shim_millis(); }

void delay(unsigned long ms) {
  const unsigned long start = millis();
  while (millis() - start < ms) {
  }
}

// One character of look-ahead, so that available() can ask the hook.
static int g_peeked = -1;

int ShimSerial::available() {
  if (g_peeked < 0) g_peeked = tflmt_shim_read();
  return g_peeked >= 0 ? 1 : 0;
}

int ShimSerial::read() {
  if (g_peeked >= 0) {
    const int c = g_peeked;
    g_peeked = -1;
    return c;
  }
  return tflmt_shim_read();
}

size_t ShimSerial::write(uint8_t c) {
  const char ch = static_cast<char>(c);
  tflmt_shim_write(&ch, 1);
  return 1;
}

size_t ShimSerial::write(const char* text) {
  const size_t n = strlen(text);
  tflmt_shim_write(text, n);
  return n;
}

size_t ShimSerial::print(long value, int base) {
  if (value < 0) return write('-') + print(0ul - static_cast<unsigned long>(value), base);
  return print(static_cast<unsigned long>(value), base);
}

size_t ShimSerial::print(unsigned long value, int base) {
  char digits[33];
  int n = 0;
  do {
    const unsigned long d = value % static_cast<unsigned long>(base);
    digits[n++] = static_cast<char>(d < 10 ? '0' + d : 'A' + d - 10);
    value /= static_cast<unsigned long>(base);
  } while (value != 0 && n < 32);
  char text[33];
  for (int i = 0; i < n; ++i) text[i] = digits[n - 1 - i];
  text[n] = '\0';
  return write(text);
}

// Fixed-point printing as Arduino's Print does it (no printf float support
// needed): round at the last digit, then integer part and decimals.
size_t ShimSerial::print(double value, int digits) {
  if (value != value) return write("nan");
  if (value > 4294967040.0 || value < -4294967040.0) return write("ovf");
  size_t n = 0;
  if (value < 0.0) {
    n += write('-');
    value = -value;
  }
  double rounding = 0.5;
  for (int i = 0; i < digits; ++i) rounding /= 10.0;
  value += rounding;
  const unsigned long whole = static_cast<unsigned long>(value);
  n += print(whole);
  if (digits > 0) n += write('.');
  double rest = value - static_cast<double>(whole);
  for (int i = 0; i < digits; ++i) {
    rest *= 10.0;
    const unsigned int d = static_cast<unsigned int>(rest);
    n += write(static_cast<uint8_t>('0' + d));
    rest -= d;
  }
  return n;
}

int ShimIMU::readAcceleration(float& x, float& y, float& z) {
  tflmt_shim_imu_read(sample_);
  x = sample_[0];
  y = sample_[1];
  z = sample_[2];
  return 1;
}

int ShimIMU::readGyroscope(float& x, float& y, float& z) {
  x = sample_[3];
  y = sample_[4];
  z = sample_[5];
  return 1;
}

// Whether main() calls loop() once more after `done` calls: forever, or
// TFLMT_SHIM_LOOPS times (emulator runs, which then return from main and
// exit). A scripted session overrides it and ends the run itself.
extern "C" __attribute__((weak)) int tflmt_shim_more_loops(unsigned long done) {
#ifdef TFLMT_SHIM_LOOPS
  return done < static_cast<unsigned long>(TFLMT_SHIM_LOOPS);
#else
  (void)done;
  return 1;
#endif
}

#ifndef TFLMT_SHIM_NO_MAIN
int main() {
  setup();
  for (unsigned long done = 0; tflmt_shim_more_loops(done); ++done) loop();
  return 0;
}
#endif
