// A minimal Arduino API of our own, for compiling (and, on an emulator,
// running) the TflmTrain sketches without an Arduino core. It covers what the
// examples use and nothing more; behaviour comes from weak hooks (shim.cpp)
// that a firmware platform overrides: output to semihosting or a UART, a clock,
// buttons, IMU samples.
#ifndef TFLM_TRAIN_ARDUINO_SHIM_ARDUINO_H_
#define TFLM_TRAIN_ARDUINO_SHIM_ARDUINO_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

// ---- hooks (weak defaults in shim.cpp; override them in a platform) --------
extern "C" {
void tflmt_shim_write(const char* data, size_t size);  // default: stdout
int tflmt_shim_read(void);                             // default: -1 (no input)
unsigned long tflmt_shim_millis(void);                 // default: a counter
int tflmt_shim_digital_read(uint8_t pin);              // default: HIGH (released)
int tflmt_shim_more_loops(unsigned long done);         // default: TFLMT_SHIM_LOOPS or forever
}

#define HIGH 0x1
#define LOW 0x0
#define INPUT 0x0
#define OUTPUT 0x1
#define INPUT_PULLUP 0x2
#define LED_BUILTIN 13
#define DEC 10
#define HEX 16

typedef bool boolean;
typedef uint8_t byte;

void pinMode(uint8_t pin, uint8_t mode);
int digitalRead(uint8_t pin);
void digitalWrite(uint8_t pin, uint8_t value);
unsigned long millis();
void delay(unsigned long ms);

class ShimSerial {
 public:
  void begin(unsigned long baud) { (void)baud; }
  explicit operator bool() const { return true; }
  int available();
  int read();
  size_t write(uint8_t c);
  size_t write(const char* text);
  size_t print(const char* text) { return write(text); }
  size_t print(char c) { return write(static_cast<uint8_t>(c)); }
  size_t print(int value, int base = DEC) { return print(static_cast<long>(value), base); }
  size_t print(unsigned int value, int base = DEC) { return print(static_cast<unsigned long>(value), base); }
  size_t print(long value, int base = DEC);
  size_t print(unsigned long value, int base = DEC);
  size_t print(double value, int digits = 2);
  size_t println() { return write("\r\n"); }
  template <typename T>
  size_t println(T value) { return print(value) + println(); }
  template <typename T>
  size_t println(T value, int format) { return print(value, format) + println(); }
};

extern ShimSerial Serial;

// The sketch's entry points, called by shim.cpp's main().
void setup();
void loop();

#endif  // TFLM_TRAIN_ARDUINO_SHIM_ARDUINO_H_
