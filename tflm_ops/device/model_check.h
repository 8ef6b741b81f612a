// tflmt::CheckModelIntegrity: the converted model's checksum, checked on a
// device before the interpreter sees the model.
//
// `tflm-train convert` (and `merge`) store a CRC-32 of the .tflite in a
// metadata entry "tflm_train_crc32" (4 bytes, little-endian), computed over
// the whole file with those 4 bytes taken as zero (converter/integrity.py,
// the host's twin of this code). Stock TFLM kernels trust their model: a
// model damaged in flash or in transfer can crash them. Check it first:
//
//   if (tflmt::CheckModelIntegrity(g_model, g_model_len) !=
//       tflmt::ModelIntegrity::kOk) { /* refuse the model */ }
//   const tflite::Model* model = tflite::GetModel(g_model);
//
// The file is walked with bounds-checked reads only, so a damaged file gives
// an answer, never an out-of-bounds read. A CRC finds damage, not intent.
//
// Device code: no heap, no exceptions, no TFLM headers.
#ifndef TFLM_OPS_DEVICE_MODEL_CHECK_H_
#define TFLM_OPS_DEVICE_MODEL_CHECK_H_

#include <cstddef>
#include <cstdint>

namespace tflmt {

enum class ModelIntegrity {
  kOk,         // the checksum matches
  kMissing,    // no checksum entry (converted by an older tflm-train, or not a converted model)
  kMismatch,   // the file changed after the checksum was written
  kMalformed,  // the flatbuffer or the checksum entry cannot be read
};

ModelIntegrity CheckModelIntegrity(const uint8_t* model, size_t size);

}  // namespace tflmt

#endif  // TFLM_OPS_DEVICE_MODEL_CHECK_H_
