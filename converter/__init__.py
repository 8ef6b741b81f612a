"""tflm_train.converter: reads, rewrites and writes .tflite models."""
