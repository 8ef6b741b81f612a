"""Parameter-efficient methods: each rewrites its target layers.

A method's `apply(rewrite, targets)` replaces or adds operators in the main
subgraph, allocates its trainable tensors in the state layout, and lists the
operators that now train (rewrite.trainable_ops). Backward and optimizer ops
are added afterwards by the converter, the same way for every method.
"""

from tflm_train.converter.methods import adapter, bias, head, lora, sparse

METHODS = {
    "lora": lora.apply,
    "adapter": adapter.apply,
    "bias": bias.apply,
    "head": head.apply,
    "sparse": sparse.apply,
}
