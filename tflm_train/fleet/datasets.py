"""Real data for federated runs: Fashion-MNIST from Debian's package, split
over clients by a Dirichlet label partition (benchmarks/federated.py).

Fashion-MNIST (H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image
Dataset for Benchmarking Machine Learning Algorithms", arXiv:1708.07747; MIT
licence) is read from the IDX files that Debian's `dataset-fashion-mnist`
installs in /usr/share/datasets/fashion-mnist/ (no download). Nothing here
reaches the network.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tflm_train.errors import UserError

FASHION_MNIST_DIR = Path(os.environ.get("TFLM_TRAIN_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzipped): magic 0x0000TTDD, D big-endian u32
    dimensions, then the values (LeCun's MNIST format)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(blob) < 4 or blob[0:2] != b"\0\0" or blob[2] not in _IDX_TYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    dims = blob[3]
    if len(blob) < 4 + 4 * dims:
        raise UserError(f"{path} is truncated (IDX header)")
    shape = struct.unpack_from(f">{dims}I", blob, 4)
    dtype = np.dtype(_IDX_TYPES[blob[2]])
    count = int(np.prod(shape)) if shape else 0
    body = 4 + 4 * dims
    if len(blob) != body + count * dtype.itemsize:
        raise UserError(f"{path} is truncated or has trailing bytes: header says {list(shape)}")
    return np.frombuffer(blob, dtype, count=count, offset=body).reshape(shape)


@dataclass
class Split:
    x: np.ndarray  # float32 [N, 28, 28, 1] in [0, 1]
    y: np.ndarray  # int32 [N]


def fashion_mnist(directory: Path | str | None = None) -> tuple[Split, Split]:
    """(train 60,000, test 10,000) Fashion-MNIST, pixels scaled to [0, 1]."""
    root = Path(directory) if directory is not None else FASHION_MNIST_DIR
    if not (root / "train-images-idx3-ubyte.gz").exists():
        raise UserError(
            f"Fashion-MNIST not found in {root}: install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or set TFLM_TRAIN_FASHION_MNIST")

    def split(prefix: str) -> Split:
        images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match")
        return Split((images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32))

    return split("train"), split("t10k")


def dirichlet_partition(labels: np.ndarray, num_partitions: int, alpha: float, seed: int = 0,
                        min_partition_size: int = 10) -> list[np.ndarray]:
    """Sample indices of each client under a Dirichlet(alpha) label split,
    made by flwr-datasets' DirichletPartitioner over an in-memory
    datasets.Dataset (labels and row numbers only; nothing downloaded).
    Unlike partition.partition_indices ("dirichlet:ALPHA") it guarantees
    `min_partition_size` samples a client: every client of the benchmark
    has data for a local epoch."""
    try:
        from datasets import Dataset
        from flwr_datasets.partitioner import DirichletPartitioner
    except ImportError:
        raise UserError('partitions need flwr-datasets: pip install "tflm-train[federated]"') from None
    table = Dataset.from_dict({"row": np.arange(len(labels), dtype=np.int64), "label": np.asarray(labels, np.int64)})
    partitioner = DirichletPartitioner(num_partitions=num_partitions, partition_by="label", alpha=alpha,
                                       min_partition_size=min_partition_size, self_balancing=True, shuffle=True,
                                       seed=seed)
    partitioner.dataset = table
    return [np.asarray(partitioner.load_partition(i)["row"], np.int64) for i in range(num_partitions)]


__all__ = ["FASHION_CLASSES", "Split", "dirichlet_partition", "fashion_mnist", "read_idx"]
