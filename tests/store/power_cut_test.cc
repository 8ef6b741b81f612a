// Host test of tflmt::AdapterStore on an emulated NOR flash that loses power
// after every single programmed byte and every page erase of a commit (and of
// a rollback), for every such cut point. After each simulated reboot the
// store must open (never refuse to boot) and yield exactly the old or exactly
// the new adapter, byte for byte - and a fresh commit must then succeed.
//
// Built and run by tests/test_adapter_store.py:
//   power_cut_test [adapter.state ...]
// Each file is used as an adapter payload (an exported training state); with
// none, synthetic ones are used. Prints one summary line per configuration.
// Host test code: std::vector is fine here (the store itself has no heap).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "device/adapter_store.h"

namespace {

using tflmt::AdapterStore;
using tflmt::StoreStatus;
using Bytes = std::vector<uint8_t>;

int failures = 0;
#define CHECK(cond, ...)                                         \
  do {                                                           \
    if (!(cond)) {                                               \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
      std::fprintf(stderr, __VA_ARGS__);                         \
      std::fprintf(stderr, "\n");                                \
      if (++failures > 20) std::exit(1);                         \
    }                                                            \
  } while (0)

// NOR flash: erase to 0xFF, program ANDs bits in. Every programmed byte and
// every page erase spends one unit of `budget`; when it is spent the power is
// gone: the operation in progress is cut (an erase is left half done, with
// garbage in the other half) and every later operation fails until reboot.
struct EmulatedFlash {
  Bytes memory;
  std::vector<bool> programmed;  // since the last erase, per byte
  uint32_t page_bytes;
  uint32_t program_unit;
  long budget = -1;  // < 0: unlimited
  bool powered = true;
  long operations = 0;  // counted with unlimited budget
  bool double_program = false;
  uint32_t garbage_seed = 12345;

  EmulatedFlash(size_t bytes, uint32_t page, uint32_t unit)
      : memory(bytes, 0xFF), programmed(bytes, false), page_bytes(page),
        program_unit(unit) {}

  bool Spend() {
    if (!powered) return false;
    if (budget == 0) {
      powered = false;
      return false;
    }
    if (budget > 0) --budget;
    ++operations;
    return true;
  }

  static bool Read(void* ctx, uint32_t address, uint8_t* dst, size_t n) {
    auto* f = static_cast<EmulatedFlash*>(ctx);
    if (!f->powered || address + n > f->memory.size()) return false;
    std::memcpy(dst, f->memory.data() + address, n);
    return true;
  }
  static bool Erase(void* ctx, uint32_t address) {
    auto* f = static_cast<EmulatedFlash*>(ctx);
    if (address % f->page_bytes != 0 || address >= f->memory.size()) {
      return false;
    }
    const bool completes = f->Spend();
    if (!completes && f->budget != 0) return false;  // already dead
    const uint32_t half = completes ? f->page_bytes : f->page_bytes / 2;
    for (uint32_t i = 0; i < f->page_bytes; ++i) {
      if (i < half) {
        f->memory[address + i] = 0xFF;
      } else {  // the part an interrupted erase did not reach: undefined
        f->garbage_seed = f->garbage_seed * 1103515245u + 12345u;
        f->memory[address + i] &= static_cast<uint8_t>(f->garbage_seed >> 16);
      }
      f->programmed[address + i] = false;
    }
    if (!completes) f->budget = -2;  // mark: the cut happened
    return completes;
  }
  static bool Program(void* ctx, uint32_t address, const uint8_t* src,
                      size_t n) {
    auto* f = static_cast<EmulatedFlash*>(ctx);
    if (address % f->program_unit != 0 || n % f->program_unit != 0 ||
        address + n > f->memory.size()) {
      return false;
    }
    for (size_t i = 0; i < n; ++i) {
      if (!f->Spend()) {
        f->budget = -2;
        f->powered = false;
        return false;
      }
      if (f->programmed[address + i]) f->double_program = true;
      f->programmed[address + i] = true;
      f->memory[address + i] &= src[i];
    }
    return true;
  }

  tflmt::Flash Interface() {
    return tflmt::Flash{this, page_bytes, program_unit, &Read, &Erase,
                        &Program};
  }
  // Power comes back; the next operations are unlimited.
  void Reboot() {
    powered = true;
    budget = -1;
  }
  bool WasCut() const { return budget == -2 || !powered; }
};

constexpr uint64_t kModelHash = 0x0123456789ABCDEFull;
constexpr uint32_t kLayoutHash = 0xCAFEF00Du;

// An adapter payload: `base` with the identity fields of a training state
// set (offsets 8 and 16) and `variant` mixed into the body.
Bytes MakeAdapter(const Bytes& base, uint8_t variant) {
  Bytes a = base;
  for (size_t i = 20; i < a.size(); ++i) {
    a[i] = static_cast<uint8_t>(a[i] ^ (variant * 37 + i * 13));
  }
  for (int i = 0; i < 8; ++i) a[8 + i] = static_cast<uint8_t>(kModelHash >> (8 * i));
  for (int i = 0; i < 4; ++i) a[16 + i] = static_cast<uint8_t>(kLayoutHash >> (8 * i));
  return a;
}

// What a reboot sees: the current adapter's bytes, or empty for factory.
bool Boot(EmulatedFlash& flash, uint32_t slot_bytes, Bytes* adapter,
          uint32_t* sequence) {
  flash.Reboot();
  AdapterStore store(flash.Interface(), 0, slot_bytes);
  if (store.Open(kModelHash, kLayoutHash) != StoreStatus::kOk) return false;
  adapter->clear();
  *sequence = store.Sequence();
  if (!store.HasAdapter()) return true;
  adapter->resize(store.Length());
  return store.Read(adapter->data(), adapter->size()) == StoreStatus::kOk;
}

struct Totals {
  long cut_points = 0;
};

// Runs `action` on a copy of `start` with every possible cut point; after
// each cut, boots and checks the adapter is one of `allowed`, then commits
// `recovery` and checks that it became current.
template <typename Action>
void EveryCut(const char* what, const EmulatedFlash& start, uint32_t slot_bytes,
              Action action, const std::vector<Bytes>& allowed,
              const Bytes& recovery, Totals* totals) {
  // The uncut run counts the operations.
  EmulatedFlash full = start;
  {
    AdapterStore store(full.Interface(), 0, slot_bytes);
    CHECK(store.Open(kModelHash, kLayoutHash) == StoreStatus::kOk, "%s open", what);
    full.operations = 0;
    CHECK(action(store) == StoreStatus::kOk, "%s uncut run", what);
    CHECK(!full.double_program, "%s programs a byte twice without erase", what);
  }
  const long operations = full.operations;
  for (long cut = 0; cut <= operations; ++cut) {
    EmulatedFlash flash = start;
    {
      AdapterStore store(flash.Interface(), 0, slot_bytes);
      CHECK(store.Open(kModelHash, kLayoutHash) == StoreStatus::kOk, "%s open", what);
      flash.budget = cut;
      const StoreStatus status = action(store);
      CHECK((status == StoreStatus::kOk) == (cut == operations),
            "%s cut %ld/%ld: status %d", what, cut, operations,
            static_cast<int>(status));
    }
    Bytes seen;
    uint32_t sequence = 0;
    CHECK(Boot(flash, slot_bytes, &seen, &sequence),
          "%s cut %ld: refused to boot", what, cut);
    bool matches = false;
    for (const Bytes& a : allowed) matches = matches || seen == a;
    CHECK(matches, "%s cut %ld/%ld: boots a mix (%zu bytes, sequence %u)",
          what, cut, operations, seen.size(), sequence);
    if (cut == operations) {
      CHECK(seen == allowed.back(), "%s: the completed action is not current", what);
    }
    // The store recovers: a new commit on the rebooted flash succeeds.
    AdapterStore store(flash.Interface(), 0, slot_bytes);
    CHECK(store.Open(kModelHash, kLayoutHash) == StoreStatus::kOk, "%s reopen", what);
    const uint32_t before = store.Sequence();
    CHECK(store.Commit(recovery.data(), recovery.size()) == StoreStatus::kOk,
          "%s cut %ld: commit after reboot", what, cut);
    CHECK(Boot(flash, slot_bytes, &seen, &sequence) && seen == recovery &&
              sequence > before,
          "%s cut %ld: recovery commit not current", what, cut);
    ++totals->cut_points;
  }
  std::printf("  %-44s %6ld cut points\n", what, operations + 1);
}

void RunConfiguration(const Bytes& payload, uint32_t page_bytes,
                      uint32_t unit, Totals* totals) {
  const Bytes factory;  // empty: the model's initial adapter
  const Bytes a1 = MakeAdapter(payload, 1), a2 = MakeAdapter(payload, 2),
              a3 = MakeAdapter(payload, 3), a4 = MakeAdapter(payload, 4),
              recovery = MakeAdapter(payload, 9);
  const uint32_t pages =
      (AdapterStore::kHeaderBytes + payload.size() + page_bytes - 1) / page_bytes;
  const uint32_t slot_bytes = pages * page_bytes;
  EmulatedFlash flash(2 * slot_bytes, page_bytes, unit);
  std::printf("adapter %zu B, page %u B, program unit %u B: slot %u B = %u pages per commit\n",
              payload.size(), page_bytes, unit, slot_bytes, pages);

  auto commit = [](const Bytes& a) {
    return [&a](AdapterStore& s) { return s.Commit(a.data(), a.size()); };
  };
  auto rollback = [](AdapterStore& s) { return s.Rollback(); };
  auto to_factory = [](AdapterStore& s) { return s.RollbackToFactory(); };

  // Fresh flash (also garbage-free erased): factory -> a1.
  EveryCut("commit into empty flash", flash, slot_bytes, commit(a1),
           {factory, a1}, recovery, totals);
  {
    AdapterStore s(flash.Interface(), 0, slot_bytes);
    s.Open(kModelHash, kLayoutHash);
    s.Commit(a1.data(), a1.size());
  }
  EveryCut("commit with one adapter stored", flash, slot_bytes, commit(a2),
           {a1, a2}, recovery, totals);
  {
    AdapterStore s(flash.Interface(), 0, slot_bytes);
    s.Open(kModelHash, kLayoutHash);
    s.Commit(a2.data(), a2.size());
  }
  // Both slots hold adapters: the commit overwrites the previous (a1).
  EveryCut("commit over the previous slot", flash, slot_bytes, commit(a3),
           {a2, a3}, recovery, totals);
  // A rejected episode: the same adapter again, only its counters raised
  // (the state header's rejected-episodes word, offset 52), so that they
  // survive a reboot.
  Bytes a2_rejected = a2;
  a2_rejected[52] = static_cast<uint8_t>(a2_rejected[52] + 1);
  EveryCut("re-commit with raised counters (rejected)", flash, slot_bytes,
           commit(a2_rejected), {a2, a2_rejected}, recovery, totals);
  EveryCut("rollback to the previous adapter", flash, slot_bytes, rollback,
           {a2, a1}, recovery, totals);
  EveryCut("rollback to factory", flash, slot_bytes, to_factory,
           {a2, a1, factory}, recovery, totals);
  {
    AdapterStore s(flash.Interface(), 0, slot_bytes);
    s.Open(kModelHash, kLayoutHash);
    CHECK(s.Rollback() == StoreStatus::kOk && s.Sequence() == 1,
          "rollback: previous not current");
  }
  // After a rollback the revoked slot is rewritten.
  EveryCut("commit after a rollback", flash, slot_bytes, commit(a4),
           {a1, a4}, recovery, totals);

  // Foreign adapters and a different model: ignored, factory boots.
  {
    AdapterStore s(flash.Interface(), 0, slot_bytes);
    CHECK(s.Open(kModelHash ^ 1, kLayoutHash) == StoreStatus::kOk &&
              !s.HasAdapter(),
          "another model's adapters are not ignored");
    AdapterStore t(flash.Interface(), 0, slot_bytes);
    t.Open(kModelHash, kLayoutHash);
    Bytes foreign = a1;
    foreign[8] ^= 1;
    CHECK(t.Commit(foreign.data(), foreign.size()) ==
              StoreStatus::kWrongIdentity,
          "commit of another model's state accepted");
    Bytes huge(t.Capacity() + 1, 0);
    CHECK(t.Commit(huge.data(), huge.size()) == StoreStatus::kTooLarge,
          "oversized commit accepted");
  }
  // Sequence numbers only grow: ten commits in a row.
  {
    AdapterStore s(flash.Interface(), 0, slot_bytes);
    s.Open(kModelHash, kLayoutHash);
    uint32_t last = s.Sequence();
    for (int i = 0; i < 10; ++i) {
      const Bytes a = MakeAdapter(payload, static_cast<uint8_t>(20 + i));
      CHECK(s.Commit(a.data(), a.size()) == StoreStatus::kOk && s.Sequence() > last,
            "sequence does not grow");
      last = s.Sequence();
    }
  }
  // A bit flip in the current slot's payload: the previous adapter boots.
  {
    AdapterStore s(flash.Interface(), 0, slot_bytes);
    s.Open(kModelHash, kLayoutHash);
    const int slot = s.CurrentSlot();
    const uint32_t previous_sequence = s.Sequence() - 1;
    flash.memory[slot * slot_bytes + AdapterStore::kHeaderBytes + 100] ^= 0x10;
    Bytes seen;
    uint32_t sequence = 0;
    CHECK(Boot(flash, slot_bytes, &seen, &sequence) &&
              sequence == previous_sequence,
          "corrupt payload not detected");
  }
}

Bytes ReadFile(const char* path) {
  Bytes data;
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return data;
  uint8_t buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) {
    data.insert(data.end(), buffer, buffer + n);
  }
  std::fclose(f);
  return data;
}

}  // namespace

// --image OUT STATE: commits a variant of STATE, then STATE itself (as is), into a 256-byte-page flash and writes the region to
// OUT, for the Python reader (tflm_train/adapter_store.py) to read back.
int WriteImage(const char* out, const char* state_path) {
  const Bytes state = ReadFile(state_path);
  if (state.size() < 64) return 2;
  uint64_t model_hash = 0;
  uint32_t layout_hash = 0;
  for (int i = 7; i >= 0; --i) model_hash = (model_hash << 8) | state[8 + i];
  for (int i = 3; i >= 0; --i) layout_hash = (layout_hash << 8) | state[16 + i];
  const uint32_t page = 256;
  const uint32_t slot_bytes =
      (AdapterStore::kHeaderBytes + state.size() + page - 1) / page * page;
  EmulatedFlash flash(2 * slot_bytes, page, 1);
  AdapterStore store(flash.Interface(), 0, slot_bytes);
  Bytes older = state;
  older.back() ^= 0xFF;
  if (store.Open(model_hash, layout_hash) != StoreStatus::kOk ||
      store.Commit(older.data(), older.size()) != StoreStatus::kOk ||
      store.Commit(state.data(), state.size()) != StoreStatus::kOk) {
    return 1;
  }
  FILE* f = std::fopen(out, "wb");
  if (f == nullptr) return 1;
  std::fwrite(flash.memory.data(), 1, flash.memory.size(), f);
  std::fclose(f);
  std::printf("slot_bytes %u sequence %u slot %d\n", slot_bytes,
              store.Sequence(), store.CurrentSlot());
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--image") == 0) {
    return WriteImage(argv[2], argv[3]);
  }
  std::vector<Bytes> payloads;
  for (int i = 1; i < argc; ++i) {
    payloads.push_back(ReadFile(argv[i]));
    if (payloads.back().size() < 64) {
      std::fprintf(stderr, "%s: not a state file\n", argv[i]);
      return 2;
    }
  }
  if (payloads.empty()) payloads.push_back(Bytes(300, 0x5A));
  Totals totals;
  for (const Bytes& payload : payloads) {
    RunConfiguration(payload, 256, 1, &totals);   // small pages, byte writes
    RunConfiguration(payload, 2048, 8, &totals);  // STM32-like double-words
  }
  std::printf("header bytes %u; cut points tested %ld; failures %d\n",
              AdapterStore::kHeaderBytes, totals.cut_points, failures);
  return failures == 0 ? 0 : 1;
}
