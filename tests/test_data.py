"""MNIST files: read as torchvision reads them, checked before use, downloaded only when missing."""

from __future__ import annotations

import shutil

import pytest
import torch
import torchvision.datasets.utils as download_utils

from gan.data import CANONICAL, load_mnist, read_idx, to_unit_range
from gan.errors import GanError
from helpers.mnist_files import make_tiny_mnist, real_mnist_root
from helpers.runs import NEEDS_REAL_MNIST, run_quick


def test_reads_what_torchvision_reads(tmp_path):
    from torchvision.datasets import MNIST

    root = make_tiny_mnist(tmp_path, n_train=100, n_test=30)
    for train in (True, False):
        ours, theirs = load_mnist(root, download=False, train=train), MNIST(root, train=train, download=False)
        assert torch.equal(ours.images, theirs.data) and torch.equal(ours.labels, theirs.targets)
    images = to_unit_range(load_mnist(root, download=False).images)
    assert images.shape == (100, 1, 28, 28) and images.min() >= -1 and images.max() <= 1


@NEEDS_REAL_MNIST
def test_the_real_files_pass_their_published_checksums():
    split = load_mnist(real_mnist_root(), download=False, train=True)
    assert split.images.shape == (60000, 28, 28) and split.labels.bincount().tolist()[1] == 6742


def copy_real_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in CANONICAL:
        shutil.copyfile(real_mnist_root() / "MNIST" / "raw" / name, raw / name)
    return raw


@NEEDS_REAL_MNIST
def test_truncated_file_is_named_as_damaged_and_nothing_is_downloaded_over_it(tmp_path, monkeypatch):
    raw = copy_real_files(tmp_path)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1_000_000])

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted over a file the user put there")

    monkeypatch.setattr(download_utils, "download_and_extract_archive", no_download)
    with pytest.raises(GanError, match=r"train-images-idx3-ubyte is damaged \(1,000,000 bytes where its header promises 47,040,016.*delete it"):
        load_mnist(tmp_path, download=True)
    assert images.stat().st_size == 1_000_000


@NEEDS_REAL_MNIST
def test_corrupt_bytes_fail_the_checksum(tmp_path):
    raw = copy_real_files(tmp_path)
    labels = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[5000] ^= 0x01
    labels.write_bytes(bytes(data))
    with pytest.raises(GanError, match=r"t10k-labels-idx1-ubyte is damaged \(MD5 [0-9a-f]{32} instead of the published 27ae3e4e"):
        load_mnist(tmp_path, download=False, train=False)


def test_a_file_that_is_not_idx_is_named(tmp_path):
    root = make_tiny_mnist(tmp_path)
    (root / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_text("<html>404 not found</html>")
    with pytest.raises(GanError, match="train-labels-idx1-ubyte is damaged .*IDX header"):
        load_mnist(root, download=False)


def test_idx_header_and_length_are_checked(tmp_path):
    root = make_tiny_mnist(tmp_path, n_train=10)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(GanError, match="7,857 bytes where its header promises 7,856"):
        read_idx(path)


def test_missing_dataset_without_download_says_where_to_put_the_files(tmp_path):
    with pytest.raises(GanError, match=r"MNIST was not found under .*MNIST/raw.*train-images-idx3-ubyte.*DATA_ROOT"):
        run_quick(tmp_path / "empty", tmp_path / "run", "data.download=false")


def test_failing_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(download_utils, "download_and_extract_archive", no_network)
    with pytest.raises(GanError, match=r"download failed: network is unreachable.*put the four IDX files"):
        run_quick(tmp_path / "empty", tmp_path / "run", "data.download=true")


def test_download_fetches_only_the_missing_files(tmp_path, monkeypatch):
    root = make_tiny_mnist(tmp_path, n_train=64)
    raw = root / "MNIST" / "raw"
    kept = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-labels-idx1-ubyte").unlink()
    fetched = []

    def fake_download(url, download_root, filename, md5):
        fetched.append(filename)
        labels = make_tiny_mnist(tmp_path / "elsewhere", n_train=64) / "MNIST" / "raw" / "train-labels-idx1-ubyte"
        shutil.copyfile(labels, f"{download_root}/train-labels-idx1-ubyte")

    monkeypatch.setattr(download_utils, "download_and_extract_archive", fake_download)
    split = load_mnist(root, download=True)
    assert fetched == ["train-labels-idx1-ubyte.gz"]
    assert (raw / "train-images-idx3-ubyte").read_bytes() == kept and len(split.labels) == 64
