"""Real data for federated runs (tflm_train/fleet/datasets.py): the IDX
reader behind Fashion-MNIST and the flwr-datasets Dirichlet partition."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from tflm_train.errors import UserError
from tflm_train.fleet.datasets import dirichlet_partition, fashion_mnist, read_idx


def _idx(values: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, values.ndim) + struct.pack(f">{values.ndim}I", *values.shape) + \
        values.astype(np.uint8).tobytes()


def test_idx_files_round_trip_and_damage_is_one_clear_error(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), images)
    (tmp_path / "bad").write_bytes(b"\x00\x01\x08\x01" + bytes(8))
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx(images)[:-1])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        fashion_mnist(tmp_path)


@pytest.mark.federated
def test_dirichlet_partition_splits_every_sample_once_with_skewed_labels():
    labels = np.repeat(np.arange(10), 30)
    parts = dirichlet_partition(labels, 5, alpha=0.3, seed=1, min_partition_size=5)
    rows = np.concatenate(parts)
    assert len(parts) == 5 and min(map(len, parts)) >= 5
    assert sorted(rows.tolist()) == list(range(len(labels)))
    # Label skew: with alpha 0.3 most clients are dominated by a few classes.
    top_share = [np.bincount(labels[p], minlength=10).max() / len(p) for p in parts]
    assert np.median(top_share) > 0.3
    again = dirichlet_partition(labels, 5, alpha=0.3, seed=1, min_partition_size=5)
    assert all((a == b).all() for a, b in zip(parts, again))


def test_fashion_mnist_from_the_debian_package():
    """Needs Debian's dataset-fashion-mnist (.ci/run installs it)."""
    train, test = fashion_mnist()
    assert train.x.shape == (60000, 28, 28, 1) and test.x.shape == (10000, 28, 28, 1)
    assert train.x.dtype == np.float32 and 0.0 <= train.x.min() and train.x.max() <= 1.0
    assert np.bincount(test.y).tolist() == [1000] * 10
