import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from backdoorlab.data import from_torch_dataset, load_dataset
from backdoorlab.data.files import read_cifar10
from backdoorlab.errors import DataError


def test_mnist5k_split_sizes_and_range():
    ds = load_dataset("mnist5k")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3500, 500, 1000)
    assert ds.input_shape == (1, 28, 28)
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert 0.0 <= float(ds.train.x.min()) and float(ds.train.x.max()) <= 1.0
    # stratified: every class has exactly 100 test and 50 val images (500 per class in mnist_5k)
    assert torch.bincount(ds.test.y).tolist() == [100] * 10
    assert torch.bincount(ds.val.y).tolist() == [50] * 10


def test_mnist5k_split_is_fixed():
    a, b = load_dataset("mnist5k"), load_dataset("mnist5k")
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.val.y, b.val.y)


def test_digits(digits):
    assert digits.input_shape == (1, 8, 8)
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert float(digits.train.x.max()) == pytest.approx(1.0)


def test_npz_with_splits_nhwc_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "set.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (60, 6, 5, 3), dtype=np.uint8),
        y_train=np.arange(60) % 3,
        x_test=rng.integers(0, 256, (9, 6, 5, 3), dtype=np.uint8),
        y_test=np.arange(9) % 3,
        classes=np.array(["a", "b", "c"]),
    )
    ds = load_dataset(f"npz:{path}")
    assert ds.input_shape == (3, 6, 5)
    assert ds.classes == ("a", "b", "c")
    assert len(ds.test) == 9 and len(ds.train) + len(ds.val) == 60
    raw = np.load(path)["x_test"][0]
    assert torch.allclose(ds.test.x[0], torch.from_numpy(raw).permute(2, 0, 1).float() / 255)


def test_npz_with_x_y_only_is_split(tmp_path):
    path = tmp_path / "xy.npz"
    np.savez(path, x=np.zeros((100, 4, 4), dtype=np.uint8), y=np.arange(100) % 2)
    ds = load_dataset(f"npz:{path}")
    assert len(ds.test) == 20 and ds.input_shape == (1, 4, 4)


def test_shared_gtsrb_npz_loads_when_present():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "orl_faces.npz"
    if not path.is_file():
        pytest.skip("shared data not present")
    ds = load_dataset(f"npz:{path}")
    assert ds.input_shape == (1, 112, 92) and ds.num_classes == 40
    assert torch.bincount(ds.val.y, minlength=40).min() >= 1


@pytest.mark.parametrize(
    "content, message",
    [(None, "file not found"), (b"not a zip", "not a readable .npz"), ("wrongkeys", "expected an .npz with x_train")],
)
def test_npz_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    if content == "wrongkeys":
        np.savez(path, images=np.zeros((2, 2, 2)))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(f"npz:{path}")
    assert str(path) in str(info.value)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError, match="valid names: .*mnist5k"):
        load_dataset("imagenet")


def test_file_datasets_need_a_data_dir(tmp_path):
    with pytest.raises(DataError, match="pass --data-dir"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="data directory not found"):
        load_dataset("cifar10", tmp_path / "nope")


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_reader(tmp_path):
    rng = np.random.default_rng(1)
    x_tr, x_te = rng.integers(0, 256, (5100, 28, 28)), rng.integers(0, 256, (20, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", x_tr)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5100) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x_te)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    ds = load_dataset("mnist", tmp_path)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (100, 5000, 20)
    assert torch.allclose(ds.test.x[3, 0], torch.from_numpy(x_te[3]).float() / 255)


def test_mnist_idx_truncated_file(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 2, 2)))
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "rb") as fh:
        raw = fh.read()
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(raw[:-3])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", tmp_path)


def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(np.arange(n) % 10)}


def test_cifar10_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(20, i)))
    test = _cifar_batch(10, 9)
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    x_tr, y_tr, x_te, y_te, classes = read_cifar10(tmp_path)
    assert x_tr.shape == (100, 32, 32, 3) and x_te.shape == (10, 32, 32, 3)
    assert np.array_equal(x_te[0], test[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert classes[0] == "airplane" and y_te.tolist() == list(range(10))


class _Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_refuses_pickles_that_run_code(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": _Boom(), b"labels": []}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        read_cifar10(tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_gtsrb_layout(tmp_path):
    root = tmp_path / "GTSRB" / "Final_Training" / "Images"
    for cls in range(3):
        d = root / f"{cls:05d}"
        d.mkdir(parents=True)
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for k in range(10):
            name = f"00000_{k:05d}.ppm"
            Image.fromarray(np.full((40, 45, 3), 20 * cls + k, dtype=np.uint8)).save(d / name)
            rows.append(f"{name};45;40;5;5;40;35;{cls}")
        (d / f"GT-{cls:05d}.csv").write_text("\n".join(rows))
    ds = load_dataset("gtsrb", tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 3
    assert len(ds.train) + len(ds.val) + len(ds.test) == 30


def test_gtsrb_missing_csv(tmp_path):
    (tmp_path / "Final_Training" / "Images" / "00000").mkdir(parents=True)
    with pytest.raises(DataError, match="GT-\\*.csv"):
        load_dataset("gtsrb", tmp_path)


def test_torch_dataset_adapter():
    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return np.full((5, 5, 3), i, dtype=np.uint8), i % 5

    ds = from_torch_dataset(Pairs(), name="pairs")
    assert ds.input_shape == (3, 5, 5) and ds.num_classes == 5
    assert len(ds.train) + len(ds.val) + len(ds.test) == 50
    assert float(ds.train.x.max()) <= 49 / 255 + 1e-6


def test_torch_dataset_adapter_rejects_normalized_images():
    data = [(torch.full((1, 4, 4), -1.0), 0), (torch.zeros(1, 4, 4), 1)] * 10
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        from_torch_dataset(data)
