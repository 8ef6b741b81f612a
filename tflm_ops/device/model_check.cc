#include "device/model_check.h"

#include "reference/crc32.h"

namespace tflmt {
namespace {

constexpr char kChecksumName[] = "tflm_train_crc32";
constexpr size_t kChecksumNameLength = sizeof(kChecksumName) - 1;
constexpr uint32_t kChecksumBytes = 4;

// Field numbers in the .tflite schema (tables Model, Metadata, Buffer).
constexpr uint32_t kModelBuffers = 4;
constexpr uint32_t kModelMetadata = 6;
constexpr uint32_t kMetadataName = 0;
constexpr uint32_t kMetadataBuffer = 1;
constexpr uint32_t kBufferData = 0;

// Flatbuffer reads that check every position against the file's size. A
// failed read sets `ok` to false and returns 0; callers check `ok` once the
// positions they computed from it are no longer used.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool ok() const { return ok_; }

  uint32_t U32(uint64_t at) {
    if (!Fits(at, 4)) return 0;
    return static_cast<uint32_t>(data_[at]) | (static_cast<uint32_t>(data_[at + 1]) << 8) |
           (static_cast<uint32_t>(data_[at + 2]) << 16) | (static_cast<uint32_t>(data_[at + 3]) << 24);
  }

  uint16_t U16(uint64_t at) {
    if (!Fits(at, 2)) return 0;
    return static_cast<uint16_t>(data_[at] | (data_[at + 1] << 8));
  }

  // The position a uoffset stored at `at` points to.
  uint64_t Indirect(uint64_t at) { return at + U32(at); }

  // Position of a table's field; 0 when the field is absent (or on failure).
  uint64_t Field(uint64_t table, uint32_t number) {
    // The vtable sits at table - soffset (a signed 32-bit value).
    const int64_t soffset = static_cast<int32_t>(U32(table));
    const int64_t vtable = static_cast<int64_t>(table) - soffset;
    if (!ok_ || vtable < 0) return Fail();
    const uint32_t slot = 4 + 2 * number;
    if (slot + 2 > U16(static_cast<uint64_t>(vtable))) return 0;
    const uint16_t offset = U16(static_cast<uint64_t>(vtable) + slot);
    return offset == 0 ? 0 : table + offset;
  }

  // A vector field: position of element 0, and the length (0, 0 if absent).
  uint64_t Vector(uint64_t table, uint32_t number, uint32_t* length) {
    *length = 0;
    const uint64_t at = Field(table, number);
    if (at == 0) return 0;
    const uint64_t vector = Indirect(at);
    *length = U32(vector);
    return vector + 4;
  }

  bool Fits(uint64_t at, uint64_t bytes) {
    if (at > size_ || bytes > size_ - at) {
      ok_ = false;
      return false;
    }
    return true;
  }

 private:
  uint64_t Fail() {
    ok_ = false;
    return 0;
  }

  const uint8_t* data_;
  size_t size_;
  bool ok_ = true;
};

// Offset of the checksum's 4 bytes in the file: kOk with *at set, kMissing,
// or kMalformed.
ModelIntegrity FindChecksum(const uint8_t* model, size_t size, uint64_t* at) {
  Reader reader(model, size);
  const uint64_t root = reader.Indirect(0);
  uint32_t count = 0;
  const uint64_t entries = reader.Vector(root, kModelMetadata, &count);
  for (uint32_t i = 0; reader.ok() && i < count; ++i) {
    const uint64_t entry = reader.Indirect(entries + 4ull * i);
    const uint64_t name_at = reader.Field(entry, kMetadataName);
    if (name_at == 0) continue;
    const uint64_t name = reader.Indirect(name_at);
    const uint32_t length = reader.U32(name);
    if (!reader.ok()) break;
    if (length != kChecksumNameLength || !reader.Fits(name + 4, length)) continue;
    bool same = true;
    for (size_t c = 0; c < kChecksumNameLength; ++c) {
      same = same && model[name + 4 + c] == static_cast<uint8_t>(kChecksumName[c]);
    }
    if (!same) continue;
    const uint64_t buffer_at = reader.Field(entry, kMetadataBuffer);
    const uint32_t index = buffer_at == 0 ? 0 : reader.U32(buffer_at);
    uint32_t buffer_count = 0;
    const uint64_t buffers = reader.Vector(root, kModelBuffers, &buffer_count);
    if (!reader.ok() || index >= buffer_count) return ModelIntegrity::kMalformed;
    uint32_t data_length = 0;
    const uint64_t data = reader.Vector(reader.Indirect(buffers + 4ull * index), kBufferData, &data_length);
    if (!reader.ok() || data_length != kChecksumBytes || !reader.Fits(data, kChecksumBytes)) {
      return ModelIntegrity::kMalformed;
    }
    *at = data;
    return ModelIntegrity::kOk;
  }
  return reader.ok() ? ModelIntegrity::kMissing : ModelIntegrity::kMalformed;
}

}  // namespace

ModelIntegrity CheckModelIntegrity(const uint8_t* model, size_t size) {
  if (model == nullptr) return ModelIntegrity::kMalformed;
  uint64_t at = 0;
  const ModelIntegrity found = FindChecksum(model, size, &at);
  if (found != ModelIntegrity::kOk) return found;
  const uint8_t* field = model + at;
  const uint32_t stored = static_cast<uint32_t>(field[0]) | (static_cast<uint32_t>(field[1]) << 8) |
                          (static_cast<uint32_t>(field[2]) << 16) | (static_cast<uint32_t>(field[3]) << 24);
  const uint8_t zeros[kChecksumBytes] = {0, 0, 0, 0};
  uint32_t crc = reference::Crc32(model, static_cast<size_t>(at));
  crc = reference::Crc32(zeros, kChecksumBytes, crc);
  crc = reference::Crc32(field + kChecksumBytes, size - static_cast<size_t>(at) - kChecksumBytes, crc);
  return crc == stored ? ModelIntegrity::kOk : ModelIntegrity::kMismatch;
}

}  // namespace tflmt
