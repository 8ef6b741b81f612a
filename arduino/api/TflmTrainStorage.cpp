#include "TflmTrainStorage.h"

#include <string.h>

#include "tflm_train/reference/crc32.h"

namespace {

constexpr uint32_t kMagic = 0x54534d54u;  // "TMST"
constexpr size_t kHeaderBytes = 12;       // magic, length, CRC-32

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t GetU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace

// ---- backends: Open(capacity), Write(header, data, size), Read(offset, dst, n), Erase()

#if defined(ARDUINO_ARCH_MBED)
#include <mbed.h>

namespace {

// The record sits in the last sectors of internal flash, away from the sketch
// (which is written from the start of flash, after the bootloader).
mbed::FlashIAP g_flash;
uint32_t g_region = 0;       // first address of the record's sectors
uint32_t g_region_bytes = 0;

bool BackendOpen(size_t capacity) {
  if (g_flash.init() != 0) return false;
  const uint32_t end = g_flash.get_flash_start() + g_flash.get_flash_size();
  const uint32_t sector = g_flash.get_sector_size(end - 1);
  const uint32_t needed = static_cast<uint32_t>(kHeaderBytes + capacity);
  g_region_bytes = (needed + sector - 1) / sector * sector;
  g_region = end - g_region_bytes;
  return g_flash.get_page_size() <= 64;
}

bool BackendErase() { return g_flash.erase(g_region, g_region_bytes) == 0; }

bool BackendWrite(const uint8_t* header, const uint8_t* data, size_t size) {
  if (!BackendErase()) return false;
  // Program in page-sized pieces through a buffer: FlashIAP wants aligned
  // lengths, and the data may sit in RAM or in flash.
  const uint32_t page = g_flash.get_page_size();
  uint8_t chunk[64];
  const size_t total = kHeaderBytes + size;
  for (size_t at = 0; at < total; at += page) {
    memset(chunk, 0xff, sizeof(chunk));
    for (size_t i = 0; i < page && at + i < total; ++i) {
      const size_t k = at + i;
      chunk[i] = k < kHeaderBytes ? header[k] : data[k - kHeaderBytes];
    }
    if (g_flash.program(chunk, g_region + at, page) != 0) return false;
  }
  return true;
}

bool BackendRead(size_t offset, uint8_t* dst, size_t n) {
  return g_flash.read(dst, g_region + static_cast<uint32_t>(offset), static_cast<uint32_t>(n)) == 0;
}

}  // namespace

const char* TflmTrainStorage::backendName() { return "internal flash (mbed FlashIAP)"; }

#elif defined(TFLMT_STORAGE_EMULATED_FLASH)

// Emulator runs (firmware/ under QEMU): memory the linker script sets aside,
// which neither the program image nor the startup code touches, so that it
// keeps its contents across a reset within one run, as flash does. Erased
// reads as 0xff, like flash.
extern "C" uint8_t __tflmt_storage_start[];
extern "C" uint8_t __tflmt_storage_end[];

namespace {

size_t RegionBytes() { return static_cast<size_t>(__tflmt_storage_end - __tflmt_storage_start); }

bool BackendOpen(size_t capacity) { return kHeaderBytes + capacity <= RegionBytes(); }

bool BackendErase() {
  memset(__tflmt_storage_start, 0xff, RegionBytes());
  return true;
}

bool BackendWrite(const uint8_t* header, const uint8_t* data, size_t size) {
  if (!BackendErase()) return false;
  memcpy(__tflmt_storage_start, header, kHeaderBytes);
  memcpy(__tflmt_storage_start + kHeaderBytes, data, size);
  return true;
}

bool BackendRead(size_t offset, uint8_t* dst, size_t n) {
  if (offset + n > RegionBytes()) return false;
  memcpy(dst, __tflmt_storage_start + offset, n);
  return true;
}

}  // namespace

const char* TflmTrainStorage::backendName() { return "emulated flash (memory a reset keeps)"; }

#elif defined(TFLMT_STORAGE_FILE)
#include <stdio.h>

namespace {

bool BackendOpen(size_t) { return true; }

bool BackendErase() { return remove(TFLMT_STORAGE_FILE) == 0; }

bool BackendWrite(const uint8_t* header, const uint8_t* data, size_t size) {
  FILE* f = fopen(TFLMT_STORAGE_FILE, "wb");
  if (f == nullptr) return false;
  const bool ok = fwrite(header, 1, kHeaderBytes, f) == kHeaderBytes && fwrite(data, 1, size, f) == size;
  return fclose(f) == 0 && ok;
}

bool BackendRead(size_t offset, uint8_t* dst, size_t n) {
  FILE* f = fopen(TFLMT_STORAGE_FILE, "rb");
  if (f == nullptr) return false;
  const bool ok = fseek(f, static_cast<long>(offset), SEEK_SET) == 0 && fread(dst, 1, n, f) == n;
  fclose(f);
  return ok;
}

}  // namespace

const char* TflmTrainStorage::backendName() { return "file " TFLMT_STORAGE_FILE; }

#else

#ifndef TFLMT_STORAGE_RAM_BYTES
#define TFLMT_STORAGE_RAM_BYTES (16 * 1024)
#endif

namespace {

// Stand-in for boards without a flash backend here: survives loop() and a
// soft restart of setup(), not a power cycle.
uint8_t g_ram[kHeaderBytes + TFLMT_STORAGE_RAM_BYTES];

bool BackendOpen(size_t capacity) { return capacity <= TFLMT_STORAGE_RAM_BYTES; }

bool BackendErase() {
  memset(g_ram, 0, sizeof(g_ram));
  return true;
}

bool BackendWrite(const uint8_t* header, const uint8_t* data, size_t size) {
  memcpy(g_ram, header, kHeaderBytes);
  memcpy(g_ram + kHeaderBytes, data, size);
  return true;
}

bool BackendRead(size_t offset, uint8_t* dst, size_t n) {
  if (offset + n > sizeof(g_ram)) return false;
  memcpy(dst, g_ram + offset, n);
  return true;
}

}  // namespace

const char* TflmTrainStorage::backendName() { return "RAM stand-in (lost on power-off)"; }

#endif

bool TflmTrainStorage::begin(size_t capacity) {
  capacity_ = 0;
  if (!BackendOpen(capacity)) return false;
  capacity_ = capacity;
  return true;
}

bool TflmTrainStorage::save(const uint8_t* data, size_t size) {
  if (capacity_ == 0 || size > capacity_) return false;
  uint8_t header[kHeaderBytes];
  PutU32(header, kMagic);
  PutU32(header + 4, static_cast<uint32_t>(size));
  PutU32(header + 8, tflmt::reference::Crc32(data, size));
  return BackendWrite(header, data, size);
}

bool TflmTrainStorage::load(uint8_t* dst, size_t size) {
  if (capacity_ == 0 || size > capacity_) return false;
  uint8_t header[kHeaderBytes];
  if (!BackendRead(0, header, kHeaderBytes)) return false;
  if (GetU32(header) != kMagic || GetU32(header + 4) != size) return false;
  if (!BackendRead(kHeaderBytes, dst, size)) return false;
  return tflmt::reference::Crc32(dst, size) == GetU32(header + 8);
}

bool TflmTrainStorage::erase() { return capacity_ != 0 && BackendErase(); }
