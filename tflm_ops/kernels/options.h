// Reads a custom op's options blob: little-endian fields in a fixed order
// that the converter writes (converter/ops.py). The first byte is the options
// version, which every op checks in Init against its own version
// (kernels/constants.h) so that a model converted by another tflm-train
// release fails loudly instead of reading garbage.
#ifndef TFLM_OPS_KERNELS_OPTIONS_H_
#define TFLM_OPS_KERNELS_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tflmt {

class OptionsReader {
 public:
  OptionsReader(const char* data, size_t length)
      : data_(reinterpret_cast<const uint8_t*>(data)), length_(length) {}

  // True when the blob starts with `expected`, the op's own options version
  // (kernels/constants.h).
  bool ReadVersion(uint8_t expected) { return U8() == expected && ok_; }

  uint8_t U8() {
    uint8_t v = 0;
    Read(&v, 1);
    return v;
  }
  int32_t I32() {
    int32_t v = 0;
    Read(&v, 4);
    return v;
  }
  float F32() {
    float v = 0.0f;
    Read(&v, 4);
    return v;
  }
  // False once any read ran past the end, or bytes were left over.
  bool Finished() const { return ok_ && offset_ == length_; }

 private:
  void Read(void* dst, size_t n) {
    if (!ok_ || data_ == nullptr || offset_ + n > length_) {
      ok_ = false;
      return;
    }
    std::memcpy(dst, data_ + offset_, n);
    offset_ += n;
  }

  const uint8_t* data_;
  size_t length_;
  size_t offset_ = 0;
  bool ok_ = true;
};

}  // namespace tflmt

#endif  // TFLM_OPS_KERNELS_OPTIONS_H_
