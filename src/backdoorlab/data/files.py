"""Readers for dataset files users bring: MNIST IDX, CIFAR-10 batches, the GTSRB folder layout, ``.npz``.

Each reader returns plain arrays; :mod:`backdoorlab.data.sources` turns them into a :class:`Dataset`.
A missing or malformed file raises :class:`DataError` naming the file and the layout expected.
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError

NPZ_LAYOUT = (
    "an .npz with x_train, y_train, x_test, y_test (or x, y), images uint8 0..255 as NHW or NHWC, "
    "labels int64, optional classes"
)
MNIST_LAYOUT = (
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (.gz allowed)"
)
CIFAR_LAYOUT = "cifar-10-batches-py/ (data_batch_1..5, test_batch) or cifar-10-python.tar.gz"
GTSRB_LAYOUT = "Final_Training/Images/<class>/GT-<class>.csv with the images beside each CSV"


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file, loaded without pickles."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected {NPZ_LAYOUT}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz ({err}); expected {NPZ_LAYOUT}") from None
    has_split = all(k in arrays for k in ("x_train", "y_train", "x_test", "y_test"))
    if not has_split and not all(k in arrays for k in ("x", "y")):
        raise DataError(f"{path}: has keys {sorted(arrays)}; expected {NPZ_LAYOUT}")
    return arrays


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / stem}: file not found; the MNIST folder needs {MNIST_LAYOUT}")


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST format): magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but the file holds {data.size} values (truncated?)")
    return data.reshape(dims)


def read_mnist_idx(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) from the four MNIST IDX files in ``directory``."""
    x_tr = read_idx(_find(directory, "train-images-idx3-ubyte"))
    y_tr = read_idx(_find(directory, "train-labels-idx1-ubyte"))
    x_te = read_idx(_find(directory, "t10k-images-idx3-ubyte"))
    y_te = read_idx(_find(directory, "t10k-labels-idx1-ubyte"))
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DataError(f"{directory}: image and label counts of the MNIST IDX files differ")
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches (dicts of numpy arrays and lists) and refuses any other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")


def _load_cifar_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError) as err:
        raise DataError(f"{source}: not a CIFAR-10 python batch ({err}); expected {CIFAR_LAYOUT}") from None
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar10(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(x_train NHWC, y_train, x_test, y_test, classes) from the python batches or their .tar.gz."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    blobs: dict[str, bytes] = {}
    archive = directory / "cifar-10-python.tar.gz"
    folder = next((d for d in (directory / "cifar-10-batches-py", directory) if (d / "test_batch").is_file()), None)
    if folder is not None:
        for n in names:
            if not (folder / n).is_file():
                raise DataError(f"{folder / n}: file not found; expected {CIFAR_LAYOUT}")
            blobs[n] = (folder / n).read_bytes()
    elif archive.is_file():
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar.getmembers():
                    base = Path(member.name).name
                    if base in names and member.isfile():
                        blobs[base] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"{archive}: unreadable archive ({err})") from None
        missing = [n for n in names if n not in blobs]
        if missing:
            raise DataError(f"{archive}: lacks {', '.join(missing)}; expected {CIFAR_LAYOUT}")
    else:
        raise DataError(f"{directory}: no CIFAR-10 data found; expected {CIFAR_LAYOUT}")
    parts = [_load_cifar_batch(blobs[n], n) for n in names]
    x_tr = np.concatenate([p[0] for p in parts[:5]])
    y_tr = np.concatenate([p[1] for p in parts[:5]])
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return x_tr, y_tr, parts[5][0], parts[5][1], classes


def _read_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None


def _read_gtsrb_csv(csv_path: Path, image_dir: Path, size: int) -> tuple[list[np.ndarray], list[int]]:
    images, labels = [], []
    with open(csv_path, newline="") as fh:
        rows = csv.DictReader(fh, delimiter=";")
        for row in rows:
            if "Filename" not in row or "ClassId" not in row:
                raise DataError(f"{csv_path}: needs the columns Filename and ClassId; expected {GTSRB_LAYOUT}")
            images.append(_read_image(image_dir / row["Filename"], size))
            labels.append(int(row["ClassId"]))
    return images, labels


def read_gtsrb(directory: Path, size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """GTSRB's official layout, images resized to ``size`` x ``size`` (default 32).

    The test split comes from ``Final_Test/Images/GT-final_test.csv`` when present, else ``None``.
    """
    root = next((d for d in (directory, directory / "GTSRB") if (d / "Final_Training" / "Images").is_dir()), None)
    if root is None:
        raise DataError(f"{directory}: no Final_Training/Images folder; expected {GTSRB_LAYOUT}")
    images, labels = [], []
    class_dirs = sorted(d for d in (root / "Final_Training" / "Images").iterdir() if d.is_dir())
    for class_dir in class_dirs:
        csv_files = sorted(class_dir.glob("GT-*.csv"))
        if not csv_files:
            raise DataError(f"{class_dir}: no GT-*.csv annotation file; expected {GTSRB_LAYOUT}")
        imgs, labs = _read_gtsrb_csv(csv_files[0], class_dir, size)
        images += imgs
        labels += labs
    if not images:
        raise DataError(f"{root}: no images found; expected {GTSRB_LAYOUT}")
    x_te = y_te = None
    test_csv = root / "Final_Test" / "Images" / "GT-final_test.csv"
    if test_csv.is_file():
        imgs, labs = _read_gtsrb_csv(test_csv, test_csv.parent, size)
        x_te, y_te = np.stack(imgs), np.asarray(labs, dtype=np.int64)
    return np.stack(images), np.asarray(labels, dtype=np.int64), x_te, y_te
