#include "device/adapter_store.h"

#include <cstring>

#include "reference/crc32.h"

namespace tflmt {
namespace {

constexpr uint8_t kMagic[4] = {'T', 'M', 'A', 'S'};
constexpr uint32_t kSequenceOffset = 8;
constexpr uint32_t kLengthOffset = 12;
constexpr uint32_t kModelHashOffset = 16;
constexpr uint32_t kLayoutHashOffset = 24;
constexpr uint32_t kPayloadCrcOffset = 28;
constexpr uint32_t kHeaderCrcOffset = 32;
constexpr uint32_t kProgrammedHeaderBytes = 40;  // [0, 40): one program call
constexpr uint32_t kCommitOffset = 40;
constexpr uint32_t kRevokeOffset = 48;
constexpr uint32_t kMarkerBytes = 8;
// Where the exported training state keeps its identity (kernels/
// training_state.h): read here without pulling the kernels' header in.
constexpr uint32_t kStateModelHashOffset = 8;
constexpr uint32_t kStateLayoutHashOffset = 16;
constexpr uint32_t kStateIdentityEnd = 20;
// Stack buffer for reading back and padding: a multiple of every unit.
constexpr uint32_t kChunk = 64;

uint32_t LoadU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t LoadU64(const uint8_t* p) {
  return static_cast<uint64_t>(LoadU32(p)) |
         (static_cast<uint64_t>(LoadU32(p + 4)) << 32);
}
void StoreU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void StoreU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void StoreU64(uint8_t* p, uint64_t v) {
  StoreU32(p, static_cast<uint32_t>(v));
  StoreU32(p + 4, static_cast<uint32_t>(v >> 32));
}
bool AllBytes(const uint8_t* p, size_t n, uint8_t value) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != value) return false;
  }
  return true;
}

}  // namespace

AdapterStore::AdapterStore(const Flash& flash, uint32_t base,
                           uint32_t slot_bytes)
    : flash_(flash), base_(base), slot_bytes_(slot_bytes) {}

uint32_t AdapterStore::Sequence() const {
  return HasAdapter() ? slots_[current_].sequence : 0;
}
uint32_t AdapterStore::Length() const {
  return HasAdapter() ? slots_[current_].length : 0;
}
uint32_t AdapterStore::PayloadCrc() const {
  return HasAdapter() ? slots_[current_].payload_crc : 0;
}

uint32_t AdapterStore::PagesPerCommit(uint32_t length) const {
  if (flash_.page_bytes == 0) return 0;
  const uint32_t bytes = kHeaderBytes + length;
  return (bytes + flash_.page_bytes - 1) / flash_.page_bytes;
}

StoreStatus AdapterStore::Open(uint64_t model_hash, uint32_t layout_hash) {
  opened_ = false;
  const uint32_t unit = flash_.program_unit;
  if (flash_.page_bytes == 0 || slot_bytes_ <= kHeaderBytes ||
      slot_bytes_ % flash_.page_bytes != 0 ||
      !(unit == 1 || unit == 2 || unit == 4 || unit == 8) ||
      flash_.read == nullptr || flash_.erase_page == nullptr ||
      flash_.program == nullptr) {
    return StoreStatus::kBadConfig;
  }
  model_hash_ = model_hash;
  layout_hash_ = layout_hash;
  for (int slot = 0; slot < 2; ++slot) {
    const StoreStatus status = ScanSlot(slot, &slots_[slot]);
    if (status != StoreStatus::kOk) return status;
  }
  Select();
  opened_ = true;
  return StoreStatus::kOk;
}

StoreStatus AdapterStore::ScanSlot(int slot, SlotInfo* info) const {
  *info = SlotInfo();
  uint8_t header[kHeaderBytes];
  if (!flash_.read(flash_.context, SlotAddress(slot), header, kHeaderBytes)) {
    return StoreStatus::kFlashError;
  }
  uint16_t version = static_cast<uint16_t>(header[4] | (header[5] << 8));
  uint16_t header_bytes = static_cast<uint16_t>(header[6] | (header[7] << 8));
  if (std::memcmp(header, kMagic, 4) != 0 || version != kFormatVersion ||
      header_bytes != kHeaderBytes ||
      LoadU32(header + kHeaderCrcOffset) !=
          reference::Crc32(header, kHeaderCrcOffset) ||
      LoadU64(header + kModelHashOffset) != model_hash_ ||
      LoadU32(header + kLayoutHashOffset) != layout_hash_) {
    return StoreStatus::kOk;  // empty, torn, foreign: not a candidate
  }
  info->header_ok = true;
  info->sequence = LoadU32(header + kSequenceOffset);
  info->length = LoadU32(header + kLengthOffset);
  info->payload_crc = LoadU32(header + kPayloadCrcOffset);
  info->revoked = !AllBytes(header + kRevokeOffset, kMarkerBytes, 0xFF);
  const bool committed = AllBytes(header + kCommitOffset, kMarkerBytes, 0x00);
  if (!committed || info->length > Capacity()) return StoreStatus::kOk;
  uint32_t crc = 0;
  const StoreStatus status = PayloadCrc(slot, info->length, &crc);
  if (status != StoreStatus::kOk) return status;
  info->valid = crc == info->payload_crc;
  return StoreStatus::kOk;
}

StoreStatus AdapterStore::PayloadCrc(int slot, uint32_t length,
                                     uint32_t* crc) const {
  uint8_t chunk[kChunk];
  uint32_t value = 0;
  const uint32_t start = SlotAddress(slot) + kHeaderBytes;
  for (uint32_t done = 0; done < length;) {
    const uint32_t n = length - done < kChunk ? length - done : kChunk;
    if (!flash_.read(flash_.context, start + done, chunk, n)) {
      return StoreStatus::kFlashError;
    }
    value = reference::Crc32(chunk, n, value);
    done += n;
  }
  *crc = value;
  return StoreStatus::kOk;
}

void AdapterStore::Select() {
  current_ = previous_ = kNoSlot;
  highest_sequence_ = 0;
  for (int slot = 0; slot < 2; ++slot) {
    const SlotInfo& s = slots_[slot];
    if (s.header_ok && s.sequence > highest_sequence_) {
      highest_sequence_ = s.sequence;
    }
    if (!s.valid || s.revoked) continue;
    if (current_ == kNoSlot || s.sequence > slots_[current_].sequence) {
      previous_ = current_;
      current_ = slot;
    } else {
      previous_ = slot;
    }
  }
}

StoreStatus AdapterStore::Read(uint8_t* dst, size_t capacity) const {
  if (!opened_ || !HasAdapter()) return StoreStatus::kNothingToRoll;
  const SlotInfo& s = slots_[current_];
  if (capacity < s.length) return StoreStatus::kTooLarge;
  if (!flash_.read(flash_.context, SlotAddress(current_) + kHeaderBytes, dst,
                   s.length)) {
    return StoreStatus::kFlashError;
  }
  return reference::Crc32(dst, s.length) == s.payload_crc
             ? StoreStatus::kOk
             : StoreStatus::kVerifyFailed;
}

// Programs `bytes` from src, the last program unit padded with 0xFF (which
// leaves erased flash as it is).
StoreStatus AdapterStore::ProgramPadded(uint32_t address, const uint8_t* src,
                                        size_t bytes) {
  const uint32_t unit = flash_.program_unit;
  const size_t whole = bytes - bytes % unit;
  if (whole > 0 && !flash_.program(flash_.context, address, src, whole)) {
    return StoreStatus::kFlashError;
  }
  if (whole < bytes) {
    uint8_t tail[8];
    std::memset(tail, 0xFF, sizeof(tail));
    std::memcpy(tail, src + whole, bytes - whole);
    if (!flash_.program(flash_.context, address + whole, tail, unit)) {
      return StoreStatus::kFlashError;
    }
  }
  return StoreStatus::kOk;
}

StoreStatus AdapterStore::Verify(uint32_t address, const uint8_t* expected,
                                 size_t bytes) const {
  uint8_t chunk[kChunk];
  for (size_t done = 0; done < bytes;) {
    const size_t n = bytes - done < kChunk ? bytes - done : kChunk;
    if (!flash_.read(flash_.context, address + done, chunk, n)) {
      return StoreStatus::kFlashError;
    }
    if (std::memcmp(chunk, expected + done, n) != 0) {
      return StoreStatus::kVerifyFailed;
    }
    done += n;
  }
  return StoreStatus::kOk;
}

StoreStatus AdapterStore::ProgramMarker(int slot, uint32_t offset) {
  uint8_t zeros[kMarkerBytes];
  std::memset(zeros, 0, sizeof(zeros));
  const uint32_t address = SlotAddress(slot) + offset;
  if (!flash_.program(flash_.context, address, zeros, kMarkerBytes)) {
    return StoreStatus::kFlashError;
  }
  return Verify(address, zeros, kMarkerBytes);
}

StoreStatus AdapterStore::Commit(const uint8_t* state, size_t length) {
  if (!opened_) return StoreStatus::kBadConfig;
  if (length > Capacity()) return StoreStatus::kTooLarge;
  if (length < kStateIdentityEnd ||
      LoadU64(state + kStateModelHashOffset) != model_hash_ ||
      LoadU32(state + kStateLayoutHashOffset) != layout_hash_) {
    return StoreStatus::kWrongIdentity;
  }
  // The slot that is not current; with neither current, the older one.
  int target;
  if (current_ != kNoSlot) {
    target = 1 - current_;
  } else {
    target = slots_[1].sequence < slots_[0].sequence ? 1 : 0;
  }
  const uint32_t address = SlotAddress(target);
  // From here on the target is no fallback, even if this commit fails.
  slots_[target].valid = false;
  Select();

  // 1. Erase, header page first: the slot stops being a candidate at once.
  const uint32_t pages = PagesPerCommit(static_cast<uint32_t>(length));
  for (uint32_t page = 0; page < pages; ++page) {
    if (!flash_.erase_page(flash_.context,
                           address + page * flash_.page_bytes)) {
      return StoreStatus::kFlashError;
    }
  }
  // 2. Payload, then the header (markers still erased).
  StoreStatus status = ProgramPadded(address + kHeaderBytes, state, length);
  if (status != StoreStatus::kOk) return status;
  uint8_t header[kProgrammedHeaderBytes];
  std::memcpy(header, kMagic, 4);
  StoreU16(header + 4, kFormatVersion);
  StoreU16(header + 6, static_cast<uint16_t>(kHeaderBytes));
  const uint32_t sequence = highest_sequence_ + 1;
  StoreU32(header + kSequenceOffset, sequence);
  StoreU32(header + kLengthOffset, static_cast<uint32_t>(length));
  StoreU64(header + kModelHashOffset, model_hash_);
  StoreU32(header + kLayoutHashOffset, layout_hash_);
  const uint32_t payload_crc = reference::Crc32(state, length);
  StoreU32(header + kPayloadCrcOffset, payload_crc);
  StoreU32(header + kHeaderCrcOffset,
           reference::Crc32(header, kHeaderCrcOffset));
  std::memset(header + kHeaderCrcOffset + 4, 0xFF,
              kProgrammedHeaderBytes - kHeaderCrcOffset - 4);
  status = ProgramPadded(address, header, kProgrammedHeaderBytes);
  if (status != StoreStatus::kOk) return status;
  // 3. Everything reads back as written, markers still erased.
  status = Verify(address + kHeaderBytes, state, length);
  if (status != StoreStatus::kOk) return status;
  status = Verify(address, header, kProgrammedHeaderBytes);
  if (status != StoreStatus::kOk) return status;
  uint8_t markers[kHeaderBytes - kProgrammedHeaderBytes];
  if (!flash_.read(flash_.context, address + kProgrammedHeaderBytes, markers,
                   sizeof(markers))) {
    return StoreStatus::kFlashError;
  }
  if (!AllBytes(markers, sizeof(markers), 0xFF)) {
    return StoreStatus::kVerifyFailed;
  }
  // 4. The one write that makes it current.
  status = ProgramMarker(target, kCommitOffset);
  if (status != StoreStatus::kOk) return status;
  SlotInfo& s = slots_[target];
  s.header_ok = s.valid = true;
  s.revoked = false;
  s.sequence = sequence;
  s.length = static_cast<uint32_t>(length);
  s.payload_crc = payload_crc;
  Select();
  return StoreStatus::kOk;
}

StoreStatus AdapterStore::Rollback() {
  if (!opened_) return StoreStatus::kBadConfig;
  if (!HasAdapter()) return StoreStatus::kNothingToRoll;
  const int slot = current_;
  const StoreStatus status = ProgramMarker(slot, kRevokeOffset);
  if (status != StoreStatus::kOk) return status;
  slots_[slot].revoked = true;
  Select();
  return StoreStatus::kOk;
}

StoreStatus AdapterStore::RollbackToFactory() {
  if (!opened_) return StoreStatus::kBadConfig;
  while (HasAdapter()) {
    const StoreStatus status = Rollback();
    if (status != StoreStatus::kOk) return status;
  }
  return StoreStatus::kOk;
}

}  // namespace tflmt
