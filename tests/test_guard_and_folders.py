import numpy as np
import pytest
import torch
from PIL import Image

from backdoorlab import guard
from backdoorlab.data.folders import UNLABELED, load_clean_data, load_image_folder
from backdoorlab.defenses.base import InputDetector
from backdoorlab.errors import ConfigError, DataError


class BrightCornerDetector(InputDetector):
    """Stand-in detector: flags inputs whose bottom-right pixel is above the calibrated threshold."""

    name = "bright_corner_stub"

    def fit(self, model, clean, *, seed=0, device="auto"):
        self._t = float(self.score(clean.x).max())
        return self

    def score(self, x):
        return x[:, 0, -1, -1]

    @property
    def threshold_(self):
        return self._t


class Constant(torch.nn.Module):
    def forward(self, x):
        return torch.tensor([[0.0, 2.0, 1.0]]).expand(len(x), 3)


def test_guard_abstains_on_flagged_inputs():
    from backdoorlab.data import Split

    clean = Split(torch.full((4, 1, 4, 4), 0.2), torch.zeros(4, dtype=torch.int64))
    det = BrightCornerDetector().fit(None, clean)
    x = torch.full((3, 1, 4, 4), 0.1)
    x[1, 0, -1, -1] = 1.0
    guarded = guard(Constant(), det)
    out = guarded(x)
    assert out.shape == (3, 4)
    assert out.argmax(1).tolist() == [1, 3, 1]
    assert guarded.last_flags.tolist() == [False, True, False]
    flagged = guard(Constant(), det, mode="flag")
    assert torch.equal(flagged(x), Constant()(x)) and flagged.last_flags.tolist() == [False, True, False]


def test_guard_needs_a_calibrated_detector():
    with pytest.raises(ConfigError, match="not calibrated"):
        guard(Constant(), BrightCornerDetector())
    with pytest.raises(ConfigError, match="abstain or flag"):
        guard(Constant(), BrightCornerDetector(), mode="drop")


def _png(path, value, size=(10, 12), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(path)


def test_labeled_and_unlabeled_folders(tmp_path):
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(3):
            _png(tmp_path / "labeled" / cls / f"{i}.png", value)
    data = load_image_folder(tmp_path / "labeled", (3, 8, 8))
    assert data.classes == ("cat", "dog") and data.labeled
    assert data.split.x.shape == (6, 3, 8, 8) and data.split.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert float(data.split.x[3].mean()) == pytest.approx(200 / 255, abs=1e-3)
    for i in range(2):
        _png(tmp_path / "flat" / f"{i}.jpg", 50, mode="L")
    flat = load_image_folder(tmp_path / "flat", (1, 8, 8))
    assert flat.classes is None and not flat.labeled and flat.split.y.tolist() == [UNLABELED] * 2


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_image_folder(tmp_path / "none", (1, 8, 8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path / "empty", (1, 8, 8))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="unreadable image"):
        load_image_folder(tmp_path / "bad", (1, 8, 8))


def test_clean_data_from_dataset_name_checks_shape():
    data = load_clean_data("digits", (1, 8, 8))
    assert data.labeled and len(data.split) > 100
    with pytest.raises(DataError, match="images are \\(1, 8, 8\\) but the model takes \\(1, 28, 28\\)"):
        load_clean_data("digits", (1, 28, 28))
