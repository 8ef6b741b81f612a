// A scripted session for a sketch under QEMU (firmware/ links this file into
// sketch_<name> when arduino/generate.py --out wrote a qemu_session_data.h
// for it): the IMU replays recorded samples, the buttons and Serial input
// follow one script per boot, and at the end of a boot's script the board
// resets (SYSRESETREQ), as a user pressing reset would; after the last boot's
// script the program exits. What survives the reset is only the memory the
// linker script sets aside (firmware/ld/sections.ld): the saved adapter
// (TflmTrainStorage's emulated-flash backend) and this file's boot record.
#include <stdio.h>
#include <stdlib.h>

#include "Arduino.h"
#include "Arduino_LSM9DS1.h"
#include "qemu_session_data.h"

extern "C" uint8_t __tflmt_boot_record[];  // 8 bytes (sections.ld)

namespace {

constexpr uint32_t kBootMagic = 0x544f4f42u;  // "BOOT"
constexpr unsigned kPressReads = 2;            // reads after a press starts: LOW, then HIGH

struct BootRecord {
  uint32_t magic;
  uint32_t boot;
};

BootRecord* Record() { return reinterpret_cast<BootRecord*>(__tflmt_boot_record); }

// Which boot this is: 0 on power-on (the memory is not yet marked), then
// counted up by each reset.
uint32_t Boot() {
  BootRecord* record = Record();
  if (record->magic != kBootMagic) {
    record->magic = kBootMagic;
    record->boot = 0;
  }
  return record->boot;
}

// Mutable by design: this is the emulated board's input, not device code.
size_t g_cursor = 0;       // next character of this boot's script
size_t g_imu_sample = 0;   // next IMU sample (from the start at every boot)
unsigned g_press_left = 0; // reads left of the button press under way
uint8_t g_press_pin = 0;

const char* Script() {
  const uint32_t boot = Boot();
  return kBootScripts[boot < kBootCount ? boot : kBootCount - 1];
}

// The sketch's pins (MotionPersonalize: record 2, label 3).
int PinOf(char event) { return event == 'R' ? 2 : event == 'L' ? 3 : -1; }

[[noreturn]] void EndOfScript() {
  BootRecord* record = Record();
  fflush(stdout);
  if (record->boot + 1 >= kBootCount) exit(0);
  printf("[qemu session] end of boot %lu: reset\n", static_cast<unsigned long>(record->boot + 1));
  fflush(stdout);
  record->boot += 1;
  // AIRCR: VECTKEY | SYSRESETREQ. QEMU resets the board and reloads the
  // program image; the set-aside memory keeps its contents.
  volatile uint32_t* const aircr = reinterpret_cast<volatile uint32_t*>(0xE000ED0Cu);
  *aircr = 0x05FA0004u;
  __asm__ volatile("dsb" ::: "memory");
  for (;;) {
  }
}

}  // namespace

extern "C" {

int tflmt_shim_more_loops(unsigned long done) {
  (void)done;
  return 1;  // the script ends the run
}

int tflmt_shim_read(void) {
  const char event = Script()[g_cursor];
  if (event == '\0') EndOfScript();
  if (PinOf(event) >= 0) return -1;  // a button press: loop() reads the pins first
  ++g_cursor;
  return static_cast<unsigned char>(event);
}

// A press reads LOW, LOW (the sketch's debounce check), then HIGH (the
// release the sketch waits for) before the script's next event may start.
int tflmt_shim_digital_read(uint8_t pin) {
  if (g_press_left > 0) {
    if (pin != g_press_pin) return HIGH;
    --g_press_left;
    return g_press_left == 0 ? HIGH : LOW;
  }
  const char event = Script()[g_cursor];
  if (PinOf(event) != static_cast<int>(pin)) return HIGH;
  ++g_cursor;
  g_press_pin = pin;
  g_press_left = kPressReads;
  return LOW;
}

void tflmt_shim_imu_read(float values[6]) {
  const float* sample = &kImuSamples[(g_imu_sample % kImuSampleCount) * 6];
  ++g_imu_sample;
  for (int i = 0; i < 6; ++i) values[i] = sample[i];
}

}  // extern "C"
