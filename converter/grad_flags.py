"""LinearLayer.grad_flags bits, as the linear kernels read them.

Kept in this one place on the Python side so that it can follow the shared
constants (converter/constants.py, pinned against the C++ side) when those
define them.
"""

POOLED_FLAG = 1  # dy is pooled over the output positions (per-channel mean)
MASK_FLAG = 2  # the forward op writes an activation mask; the backward op reads it
