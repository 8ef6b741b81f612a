// Keeps one training state across resets: a small storage interface.
//
//   TflmTrainStorage storage;
//   storage.begin(trainer.stateBytes());
//   if (storage.load(buffer, size)) trainer.loadState(buffer, size);
//   ... train ...
//   trainer.saveState(buffer, size);  storage.save(buffer, size);
//
// Backends, chosen when the library is compiled:
//   ARDUINO_ARCH_MBED (Nano 33 BLE / BLE Sense, Portenta, Nicla): the last
//     sectors of the MCU's internal flash, through mbed's FlashIAP;
//   TFLMT_STORAGE_EMULATED_FLASH defined (firmware/ under QEMU): memory the
//     linker script sets aside, which a reset within one run leaves alone;
//   TFLMT_STORAGE_FILE defined (host or semihosting builds): that file;
//   otherwise: a RAM stand-in (TFLMT_STORAGE_RAM_BYTES, default 16 KB) that
//     lives as long as the program, for compile checks and emulators.
// A record is [magic, length, CRC-32 of the bytes, bytes]: a torn or foreign
// write reads back as "nothing saved". The state carries its own checks too
// (model hash, layout, CRC), which TflmTrainer::loadState's next step applies.
#ifndef TFLM_TRAIN_ARDUINO_TFLMTRAINSTORAGE_H_
#define TFLM_TRAIN_ARDUINO_TFLMTRAINSTORAGE_H_

#include <stddef.h>
#include <stdint.h>

class TflmTrainStorage {
 public:
  // Reserves room for a record of up to `capacity` bytes. False if the
  // backend has less room.
  bool begin(size_t capacity);
  // Writes one record (replacing the previous one).
  bool save(const uint8_t* data, size_t size);
  // Reads the record back into dst; false if none, or it is damaged, or its
  // size differs from `size`.
  bool load(uint8_t* dst, size_t size);
  // Forgets the record.
  bool erase();
  // Which backend was compiled in, for Serial.
  static const char* backendName();

 private:
  size_t capacity_ = 0;
};

#endif  // TFLM_TRAIN_ARDUINO_TFLMTRAINSTORAGE_H_
