// kernel_runner: calls tflm-train's kernels through the array port on cases
// recorded on the host, and writes every tensor the kernels wrote.
//
//   kernel_runner [CASES [OUTPUTS]]   (defaults: kernel_cases.bin,
//                                      kernel_outputs.bin in the working dir)
//
// The same source builds for x86 and for Cortex-M under QEMU (files through
// semihosting); the test compares the outputs byte for byte. Cases come from
// tests/device/make_kernel_cases.py, which documents the file format. One case
// is a small graph of our custom ops (one op, or every custom op of a
// converted model in execution order): tensors, nodes, and invocations that
// set tensors (graph inputs, and what TFLM's builtin ops computed on the host)
// before running every node in order.
//
// Output, per case and invocation: the bytes of every "result" tensor (flag
// bit 3: written by a custom op, or a variable) in tensor order.
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "kernels/kernels.h"
#include "port/array/array_port.h"
#include "port/port.h"

namespace {

using tflmt::array_port::Arena;
using tflmt::array_port::Tensor;
using tflmt::port::KernelDef;
using tflmt::port::Status;

// Static storage: the same on a host and on a board without a heap.
constexpr size_t kFileBytes = 1536 * 1024;
constexpr size_t kArenaBytes = 1024 * 1024;
constexpr int kMaxTensors = 256;
constexpr int kMaxNodes = 64;
alignas(16) uint8_t g_file[kFileBytes];
alignas(16) uint8_t g_arena[kArenaBytes];
Tensor g_tensors[kMaxTensors];
TfLiteNode g_nodes[kMaxNodes];
const KernelDef* g_kernels[kMaxNodes];
uint8_t g_flags[kMaxTensors];

enum TensorFlags : uint8_t {
  kVariable = 1,
  kConstant = 2,
  kResult = 8,
};

template <const KernelDef*... Kernels>
const KernelDef* FindKernel(const char* name,
                            tflmt::KernelList<Kernels...>) {
  const KernelDef* all[] = {Kernels...};
  for (const KernelDef* kernel : all) {
    if (std::strcmp(kernel->name, name) == 0) return kernel;
  }
  return nullptr;
}

// Sequential reader over the case file; every field is 4-byte aligned.
struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  bool ok = true;

  uint32_t U32() {
    if (end - p < 4) {
      ok = false;
      return 0;
    }
    uint32_t v;
    std::memcpy(&v, p, 4);
    p += 4;
    return v;
  }
  int32_t I32() { return static_cast<int32_t>(U32()); }
  float F32() {
    const uint32_t bits = U32();
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  }
  // `bytes` bytes, then padding to a multiple of 4.
  const uint8_t* Bytes(uint32_t bytes) {
    const uint32_t padded = (bytes + 3u) & ~3u;
    if (static_cast<size_t>(end - p) < padded) {
      ok = false;
      return nullptr;
    }
    const uint8_t* start = p;
    p += padded;
    return start;
  }
};

bool Fail(const char* what, int index) {
  std::printf("kernel_runner: %s (%d)\n", what, index);
  return false;
}

// Runs one case; appends its results to `out`.
bool RunCase(Reader& in, int case_index, FILE* out) {
  const uint32_t name_length = in.U32();
  const char* case_name = reinterpret_cast<const char*>(in.Bytes(name_length));
  if (!in.ok) return Fail("truncated case name", case_index);
  std::printf("case %d: %.*s\n", case_index, static_cast<int>(name_length),
              case_name);

  Arena arena;
  arena.base = g_arena;
  arena.capacity = kArenaBytes;
  TfLiteContext context;
  context.tensors = g_tensors;
  context.arena = &arena;

  const uint32_t num_tensors = in.U32();
  if (num_tensors > static_cast<uint32_t>(kMaxTensors)) {
    return Fail("too many tensors", static_cast<int>(num_tensors));
  }
  context.num_tensors = static_cast<int>(num_tensors);
  for (uint32_t t = 0; t < num_tensors; ++t) {
    Tensor& tensor = g_tensors[t];
    tensor = Tensor();
    tflmt::port::TensorInfo& info = tensor.info;
    info.type = static_cast<tflmt::port::DataType>(in.U32());
    g_flags[t] = static_cast<uint8_t>(in.U32());
    info.is_variable = (g_flags[t] & kVariable) != 0;
    info.rank = static_cast<int>(in.U32());
    if (info.rank > tflmt::port::kMaxRank) return Fail("rank", info.rank);
    for (int d = 0; d < info.rank; ++d) info.dims[d] = in.I32();
    info.quant.scale = in.F32();
    info.quant.zero_point = in.I32();
    info.quant.quantized_dimension = in.I32();
    const uint32_t channels = in.U32();
    if (channels > 1) {
      info.quant.num_channels = static_cast<int>(channels);
      // The file buffer is 16-byte aligned and every field 4: floats are safe.
      info.quant.channel_scales =
          reinterpret_cast<const float*>(in.Bytes(4 * channels));
    }
    info.bytes = in.U32();
    if (g_flags[t] & kConstant) {
      tensor.data = const_cast<uint8_t*>(in.Bytes(info.bytes));
      info.constant_data = tensor.data;
    } else {
      tensor.data = arena.Allocate(info.bytes);  // zeroed below
      if (tensor.data == nullptr) return Fail("arena full at tensor", t);
      std::memset(tensor.data, 0, info.bytes);
    }
    if (!in.ok) return Fail("truncated tensor", t);
  }

  const uint32_t num_nodes = in.U32();
  if (num_nodes > static_cast<uint32_t>(kMaxNodes)) {
    return Fail("too many nodes", static_cast<int>(num_nodes));
  }
  for (uint32_t n = 0; n < num_nodes; ++n) {
    const uint32_t op_length = in.U32();
    const uint8_t* op_name = in.Bytes(op_length);
    const uint32_t options_length = in.U32();
    const uint8_t* options = in.Bytes(options_length);
    TfLiteNode& node = g_nodes[n];
    node = TfLiteNode();
    node.num_inputs = static_cast<int>(in.U32());
    node.inputs = reinterpret_cast<const int32_t*>(in.Bytes(4 * node.num_inputs));
    node.num_outputs = static_cast<int>(in.U32());
    node.outputs =
        reinterpret_cast<const int32_t*>(in.Bytes(4 * node.num_outputs));
    if (!in.ok) return Fail("truncated node", n);
    char name[64] = {};
    std::memcpy(name, op_name, op_length < sizeof(name) - 1 ? op_length
                                                            : sizeof(name) - 1);
    g_kernels[n] = FindKernel(name, tflmt::AllKernels{});
    if (g_kernels[n] == nullptr) {
      std::printf("kernel_runner: no kernel %s\n", name);
      return false;
    }
    const KernelDef& kernel = *g_kernels[n];
    if (kernel.init != nullptr) {
      node.user_data = kernel.init(&context,
                                   reinterpret_cast<const char*>(options),
                                   options_length);
    }
    if (kernel.prepare != nullptr &&
        kernel.prepare(&context, &node) != Status::kOk) {
      std::printf("kernel_runner: %s Prepare failed (node %u)\n", name,
                  static_cast<unsigned>(n));
      return false;
    }
  }

  const uint32_t num_invocations = in.U32();
  for (uint32_t inv = 0; inv < num_invocations; ++inv) {
    const uint32_t invocation_flags = in.U32();
    if (invocation_flags & 1u) {
      // MicroInterpreter::Reset: every op's reset, variables back to zero.
      for (uint32_t n = 0; n < num_nodes; ++n) {
        if (g_kernels[n]->reset != nullptr) {
          g_kernels[n]->reset(&context, g_nodes[n].user_data);
        }
      }
      for (uint32_t t = 0; t < num_tensors; ++t) {
        if (g_flags[t] & kVariable) {
          std::memset(g_tensors[t].data, 0, g_tensors[t].info.bytes);
        }
      }
    }
    const uint32_t num_feeds = in.U32();
    for (uint32_t f = 0; f < num_feeds; ++f) {
      const uint32_t t = in.U32();
      if (t >= num_tensors || (g_flags[t] & kConstant)) {
        return Fail("bad feed tensor", static_cast<int>(t));
      }
      const uint8_t* bytes = in.Bytes(g_tensors[t].info.bytes);
      if (!in.ok) return Fail("truncated feed", static_cast<int>(t));
      std::memcpy(g_tensors[t].data, bytes, g_tensors[t].info.bytes);
    }
    for (uint32_t n = 0; n < num_nodes; ++n) {
      if (g_kernels[n]->eval(&context, &g_nodes[n]) != Status::kOk) {
        std::printf("kernel_runner: %s Eval failed (invocation %u, node %u)\n",
                    g_kernels[n]->name, static_cast<unsigned>(inv),
                    static_cast<unsigned>(n));
        return false;
      }
    }
    for (uint32_t t = 0; t < num_tensors; ++t) {
      if ((g_flags[t] & kResult) &&
          std::fwrite(g_tensors[t].data, 1, g_tensors[t].info.bytes, out) !=
              g_tensors[t].info.bytes) {
        return Fail("cannot write outputs", static_cast<int>(t));
      }
    }
  }
  for (uint32_t n = 0; n < num_nodes; ++n) {
    if (g_kernels[n]->free != nullptr) {
      g_kernels[n]->free(&context, g_nodes[n].user_data);
    }
  }
  std::printf("case %d: ok, arena %u bytes\n", case_index,
              static_cast<unsigned>(arena.used));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const char* cases_path = argc > 1 ? argv[1] : "kernel_cases.bin";
  const char* outputs_path = argc > 2 ? argv[2] : "kernel_outputs.bin";
  FILE* f = std::fopen(cases_path, "rb");
  if (f == nullptr) {
    std::printf("kernel_runner: cannot open %s\n", cases_path);
    return 1;
  }
  const size_t size = std::fread(g_file, 1, kFileBytes, f);
  const bool too_big = std::fgetc(f) != EOF;
  std::fclose(f);
  if (too_big) {
    std::printf("kernel_runner: %s is larger than %u bytes\n", cases_path,
                static_cast<unsigned>(kFileBytes));
    return 1;
  }
  Reader in{g_file, g_file + size};
  if (size < 12 || std::memcmp(g_file, "TKRC", 4) != 0) {
    std::printf("kernel_runner: %s is not a case file\n", cases_path);
    return 1;
  }
  in.p += 4;
  const uint32_t version = in.U32();
  const uint32_t num_cases = in.U32();
  if (version != 1) return Fail("case file version", static_cast<int>(version)), 1;
  FILE* out = std::fopen(outputs_path, "wb");
  if (out == nullptr) {
    std::printf("kernel_runner: cannot write %s\n", outputs_path);
    return 1;
  }
  int failures = 0;
  for (uint32_t c = 0; c < num_cases; ++c) {
    // Each case starts with its length, so a failed case can be skipped.
    const uint32_t case_bytes = in.U32();
    const uint8_t* case_start = in.Bytes(case_bytes);
    if (!in.ok) {
      Fail("truncated case", static_cast<int>(c));
      ++failures;
      break;
    }
    Reader case_in{case_start, case_start + case_bytes};
    if (!RunCase(case_in, static_cast<int>(c), out)) ++failures;
  }
  const bool closed = std::fclose(out) == 0;
  std::printf("kernel_runner: %s\n",
              failures == 0 && closed ? "all cases ran" : "FAILED");
  return failures == 0 && closed ? 0 : 1;
}
