// tflmt::AdapterStore: a trained adapter (an exported training state) kept in
// NOR flash so that it survives reboots and power cuts in the middle of a
// write.
//
// Two slots (A/B), each an integer number of erase pages:
//
//   offset  size  field (little-endian)
//        0     4  magic "TMAS"
//        4     2  format version (1)
//        6     2  header bytes (64)
//        8     4  sequence number (monotonic: one more than any slot seen)
//       12     4  payload length in bytes
//       16     8  base model hash  } copied from the state's header
//       24     4  layout hash      } (docs/state_format.md)
//       28     4  CRC-32 of the payload
//       32     4  CRC-32 of bytes [0, 32)
//       36     4  0xFF (erased, never programmed)
//       40     8  COMMIT marker: 0xFF.. erased, 0x00.. committed
//       48     8  REVOKE marker: 0xFF.. erased, anything else revoked
//       56     8  0xFF (erased)
//       64     -  payload (the exported state)
//
// A commit writes the slot that is not current: erase its pages (the header
// page first), program payload and header, read everything back and compare,
// and only then program the COMMIT marker. The marker is the single point at
// which the new adapter becomes current, and it is safe to tear:
//   - a slot counts as committed only when all 8 marker bytes read 0x00, so
//     a marker cut after any byte but the last is "not committed";
//   - the payload was verified before the marker was touched, so even a
//     marker that reads differently from one boot to the next (a word cut in
//     the middle of programming on real NOR) selects either the old or the
//     new adapter, each complete and checked.
// The current adapter is the committed, unrevoked slot whose header and
// payload CRCs hold, that belongs to the expected model, with the highest
// sequence number. The other slot, if it is valid too, is the previous one.
// No valid slot at all means "factory": the model's initial adapter (load
// nothing; Trainer::Reset()). Open() therefore never fails on flash contents.
//
// Rollback() programs the current slot's REVOKE marker: any programmed bit
// revokes, so a torn revoke is either no rollback or a complete one. The
// previous adapter (or factory) becomes current. RollbackToFactory() revokes
// both.
//
// Every flash byte is programmed at most once per erase (markers have their
// own 8-byte words), so flash with ECC that forbids re-programming a word
// (e.g. STM32L4/G4 double-words) works with program_unit 8.
//
// Device code: no heap, no exceptions, no RTTI, no globals. The flash is the
// caller's: three functions and a context pointer.
#ifndef TFLM_OPS_DEVICE_ADAPTER_STORE_H_
#define TFLM_OPS_DEVICE_ADAPTER_STORE_H_

#include <cstddef>
#include <cstdint>

namespace tflmt {

// The user's flash. Addresses are absolute; each call returns true on
// success. NOR semantics: erase sets a page to 0xFF, program only clears bits.
struct Flash {
  void* context;
  uint32_t page_bytes;    // erase granularity
  uint32_t program_unit;  // program granularity: 1, 2, 4 or 8 bytes
  bool (*read)(void* context, uint32_t address, uint8_t* dst, size_t bytes);
  bool (*erase_page)(void* context, uint32_t address);
  bool (*program)(void* context, uint32_t address, const uint8_t* src,
                  size_t bytes);
};

enum class StoreStatus : uint8_t {
  kOk = 0,
  kBadConfig,      // slot size not a multiple of the page, unit not 1/2/4/8
  kTooLarge,       // the adapter does not fit in a slot
  kFlashError,     // the flash reported a failure (a power cut, on the host)
  kVerifyFailed,   // read-back differs from what was programmed
  kNothingToRoll,  // Rollback with no current adapter (already factory)
  kWrongIdentity,  // Commit of a state of another model / layout
};

class AdapterStore {
 public:
  static constexpr uint32_t kHeaderBytes = 64;
  static constexpr uint16_t kFormatVersion = 1;
  static constexpr int kNoSlot = -1;

  // The store's region: slot 0 at `base`, slot 1 at `base + slot_bytes`.
  // slot_bytes must be a multiple of flash.page_bytes.
  AdapterStore(const Flash& flash, uint32_t base, uint32_t slot_bytes);

  // Scans both slots and picks the current adapter. Slots written for
  // another base model or layout (a firmware update changed the model) are
  // ignored, as if empty. Fails only on a bad configuration or a flash
  // read error; corrupt or torn contents just mean "not valid".
  StoreStatus Open(uint64_t model_hash, uint32_t layout_hash);

  // The current adapter, if any (false: factory, the model's initial one).
  bool HasAdapter() const { return current_ != kNoSlot; }
  bool HasPrevious() const { return previous_ != kNoSlot; }
  int CurrentSlot() const { return current_; }
  uint32_t Sequence() const;      // 0 for factory
  uint32_t Length() const;        // bytes of the current adapter (0: factory)
  uint32_t PayloadCrc() const;    // CRC-32 of the current adapter (0: factory)
  // Bytes the largest adapter may have.
  uint32_t Capacity() const { return slot_bytes_ - kHeaderBytes; }
  // Flash pages one commit erases (and writes at most).
  uint32_t PagesPerCommit(uint32_t length) const;

  // Copies the current adapter to dst (Length() bytes). The payload is
  // CRC-checked again while it is read.
  StoreStatus Read(uint8_t* dst, size_t capacity) const;

  // Makes `state` (an exported training state: Trainer::SaveState) the
  // current adapter. Its header must carry the hashes Open() was given. On
  // any failure the previous current adapter stays current.
  StoreStatus Commit(const uint8_t* state, size_t length);

  // Revokes the current adapter: the previous one (or factory) becomes
  // current.
  StoreStatus Rollback();
  // Revokes every stored adapter: the model's initial adapter is current.
  StoreStatus RollbackToFactory();

 private:
  struct SlotInfo {
    bool header_ok = false;  // magic, version, header CRC, identity
    bool valid = false;      // + committed, payload CRC holds
    bool revoked = false;
    uint32_t sequence = 0;
    uint32_t length = 0;
    uint32_t payload_crc = 0;
  };

  uint32_t SlotAddress(int slot) const { return base_ + slot * slot_bytes_; }
  StoreStatus ScanSlot(int slot, SlotInfo* info) const;
  StoreStatus PayloadCrc(int slot, uint32_t length, uint32_t* crc) const;
  StoreStatus ProgramPadded(uint32_t address, const uint8_t* src,
                            size_t bytes);
  StoreStatus ProgramMarker(int slot, uint32_t offset);
  StoreStatus Verify(uint32_t address, const uint8_t* expected,
                     size_t bytes) const;
  void Select();

  Flash flash_;
  uint32_t base_;
  uint32_t slot_bytes_;
  uint64_t model_hash_ = 0;
  uint32_t layout_hash_ = 0;
  bool opened_ = false;
  SlotInfo slots_[2];
  int current_ = kNoSlot;
  int previous_ = kNoSlot;
  uint32_t highest_sequence_ = 0;  // over every slot with a sound header
};

}  // namespace tflmt

#endif  // TFLM_OPS_DEVICE_ADAPTER_STORE_H_
