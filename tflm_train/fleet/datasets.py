"""Real data for federated runs: Fashion-MNIST from Debian's package, split
over clients by a Dirichlet label partition, and a natural per-user
partition: smartwatch IMU recordings of shoulder exercises, one client per
study participant (benchmarks/federated.py --dataset).

Fashion-MNIST (H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image
Dataset for Benchmarking Machine Learning Algorithms", arXiv:1708.07747; MIT
licence) is read from the IDX files that Debian's `dataset-fashion-mnist`
installs in /usr/share/datasets/fashion-mnist/ (no download). Nothing here
reaches the network.
"""

from __future__ import annotations

import gzip
import os
import pickle
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


# ---- a natural per-user partition: smartwatch IMU, one client per participant ------------
#
# seglearn (PyPI, BSD-3-Clause) ships seglearn/data/watch_dataset.npy inside its
# wheel: 6-axis inertial data (accelerometer in g, gyroscope in rad/s, 50 Hz)
# of a smartwatch worn by 10 participants doing sets of about 20
# repetitions of 7 shoulder physiotherapy exercises, each with the left and the
# right arm: 140 recordings of 19-52 s (D. M. Burns et al., "Shoulder
# physiotherapy exercise recognition: machine learning the inertial signals
# from a smartwatch", Physiol. Meas. 2018, arXiv:1802.01489). The label is the
# exercise, never the person: each participant is a natural client holding
# all seven classes recorded by their own body, arm and watch placement.

WATCH_EXERCISES = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")  # the study's exercise codes
# A device scales its raw sensor values before the int8 input: g as is, rad/s
# divided by pi (so both sensors' usual range is about +-1 to +-3).
_WATCH_CHANNEL_SCALE = np.array([1.0, 1.0, 1.0, 1.0 / np.pi, 1.0 / np.pi, 1.0 / np.pi], np.float32)


@dataclass
class UserWindows:
    """One participant's windows: x float32 [N, window, 1, 6] (time, 1, the
    six channels: a 1-D signal laid out for CONV_2D), y int32 [N] exercise,
    and where each window comes from: recording index (into the 140) and
    first sample."""
    user: int
    x: np.ndarray
    y: np.ndarray
    recording: np.ndarray
    start: np.ndarray


def watch_dataset_path() -> Path:
    """watch_dataset.npy inside the installed seglearn package, found
    without importing seglearn (only its data file is used)."""
    import importlib.util

    spec = importlib.util.find_spec("seglearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError('the smartwatch exercise data needs seglearn: pip install seglearn '
                        '(or "tflm-train[federated]")')
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "watch_dataset.npy"


def watch_exercises(path: Path | str | None = None, window: int = 100, train_fraction: float = 0.7
                    ) -> tuple[list[UserWindows], list[UserWindows]]:
    """(training, held-out) windows of every participant, in participant order.

    Each recording is cut in time: its first `train_fraction` gives training
    windows of `window` samples (2 s at 50 Hz) every window/2 samples; the
    rest gives held-out windows, back to back. No window crosses the cut, so
    no held-out sample is in any training window: the held-out set is later
    data of the same people (what a deployed model meets next), not a copy
    of overlapping training windows."""
    if window < 2 or not 0.0 < train_fraction < 1.0:
        raise UserError(f"watch windows: need window >= 2 and 0 < train_fraction < 1, got {window}, {train_fraction}")
    path = Path(path) if path is not None else watch_dataset_path()
    try:
        # A dict pickled by seglearn's authors: load only a file you trust (the installed package's).
        data = np.load(path, allow_pickle=True).item()
        recordings, labels, users = data["X"], np.asarray(data["y"]), np.asarray(data["subject"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"cannot read the smartwatch exercise data {path}: {exc}") from None
    if len(recordings) != len(labels) or len(labels) != len(users):
        raise UserError(f"{path}: {len(recordings)} recordings, {len(labels)} labels, {len(users)} subjects")
    hop = window // 2
    training: dict[int, list] = {}
    held_out: dict[int, list] = {}

    def cut(signal: np.ndarray, begin: int, end: int, step: int) -> list[int]:
        return list(range(begin, end - window + 1, step))

    for index, (signal, label, user) in enumerate(zip(recordings, labels, users)):
        signal = np.asarray(signal, np.float32)
        if signal.ndim != 2 or signal.shape[1] != 6:
            raise UserError(f"{path}: recording {index} has shape {signal.shape}, expected [samples, 6]")
        signal = signal * _WATCH_CHANNEL_SCALE
        boundary = int(len(signal) * train_fraction)
        for target, starts in ((training, cut(signal, 0, boundary, hop)),
                               (held_out, cut(signal, boundary, len(signal), window))):
            rows = target.setdefault(int(user), [])
            rows.extend((signal[s : s + window], int(label), index, s) for s in starts)

    def gather(table: dict[int, list]) -> list[UserWindows]:
        return [UserWindows(user, np.stack([r[0] for r in rows])[:, :, None, :],
                            np.array([r[1] for r in rows], np.int32), np.array([r[2] for r in rows], np.int64),
                            np.array([r[3] for r in rows], np.int64))
                for user, rows in sorted(table.items())]

    return gather(training), gather(held_out)


def pooled(users: list[UserWindows]) -> Split:
    """The windows of several participants as one split."""
    return Split(np.concatenate([u.x for u in users]), np.concatenate([u.y for u in users]))


__all__ = ["FASHION_CLASSES", "Split", "UserWindows", "WATCH_EXERCISES", "dirichlet_partition", "fashion_mnist",
           "pooled", "read_idx", "watch_dataset_path", "watch_exercises"]
