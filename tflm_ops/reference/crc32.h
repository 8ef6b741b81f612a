// CRC-32 (IEEE 802.3, reflected, the one zlib and Python's zlib.crc32 use),
// with a 16-entry table: 64 bytes of flash, two lookups per byte.
#ifndef TFLM_OPS_REFERENCE_CRC32_H_
#define TFLM_OPS_REFERENCE_CRC32_H_

#include <cstddef>
#include <cstdint>

namespace tflmt {
namespace reference {

// Pass the previous result as `crc` to continue over a second span.
inline uint32_t Crc32(const uint8_t* data, size_t length, uint32_t crc = 0) {
  static constexpr uint32_t kNibbleTable[16] = {
      0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu,
      0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
      0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
      0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
  crc = ~crc;
  for (size_t i = 0; i < length; ++i) {
    crc ^= data[i];
    crc = (crc >> 4) ^ kNibbleTable[crc & 0x0Fu];
    crc = (crc >> 4) ^ kNibbleTable[crc & 0x0Fu];
  }
  return ~crc;
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_CRC32_H_
