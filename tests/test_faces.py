"""Faces: the glasses glyph and trigger, face_cnn, the glasses attacks and the orl_faces loader. Synthetic faces;
the real ORL file only where it is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.data import load_dataset
from backdoorlab.data.base import build_dataset
from backdoorlab.errors import ConfigError, DataError
from backdoorlab.metrics import backdoor_metrics
from backdoorlab.models import TrainingConfig, build_model
from backdoorlab.models.channels import find_site
from backdoorlab.models.replay import split_at
from backdoorlab.triggers.stickers import glasses_glyph, glasses_trigger

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def test_glasses_glyph_is_symmetric_and_sunglasses_cover_the_rims():
    rims = glasses_glyph(60, 14, thickness=3, filled=False)
    solid = glasses_glyph(60, 14, thickness=3, filled=True)
    assert rims.shape == solid.shape == (14, 60)
    assert torch.equal(rims, rims.flip(1)) and torch.equal(solid, solid.flip(1))
    assert torch.all(solid >= rims)  # every rim pixel is also a sunglasses pixel
    assert 250 < float(rims.sum()) < float(solid.sum()) < 0.75 * 14 * 60
    assert float(rims[7, 12]) == 0 and float(solid[7, 12]) == 1  # inside the left lens
    assert float(rims[:, :3].sum()) > 0  # the temple arm reaches the border
    with pytest.raises(ConfigError, match="rims"):
        glasses_glyph(10, 14, thickness=3)


def test_glasses_trigger_paints_the_glyph_over_the_eyes_and_nothing_else():
    trig = glasses_trigger((1, 112, 92))
    assert trig.describe()["position"] == [47, 16] and trig.kind == "sunglasses"
    mask = trig.mask[0]
    rows, cols = mask.nonzero(as_tuple=True)
    assert (int(rows.min()), int(rows.max())) == (47, 47 + 13) and (int(cols.min()), int(cols.max())) == (16, 75)
    x = torch.full((2, 1, 112, 92), 0.7)
    out = trig(x)
    assert torch.all(out[:, :, mask > 0] == 0.0) and torch.all(out[:, :, mask == 0] == 0.7)
    white = glasses_trigger((3, 64, 64), color=[1.0, 1.0, 1.0], filled=False, position=(10, 2))
    assert white.mask[0, 10:].sum() == white.mask.sum() and float(white.pattern.min()) == 1.0


def test_face_cnn_fits_orl_and_is_prunable():
    model = build_model("face_cnn", (1, 112, 92), 40, (0.43,), (0.2,), seed=0).eval()
    assert model(torch.rand(2, 1, 112, 92)).shape == (2, 40)
    site = find_site(model)
    assert site.channels == 64 and len(site.chain) == 2 and split_at(model, site.output) is not None
    assert build_model("face_cnn", (3, 40, 36), 5)(torch.rand(1, 3, 40, 36)).shape == (1, 5)
    with pytest.raises(ConfigError, match="at least 32x32"):
        build_model("face_cnn", (1, 28, 28), 10)


def test_glasses_attacks_take_badnets_parameters_and_refuse_square_ones():
    attack = ATTACKS.build(
        "pruning_aware_glasses", {"trigger": "glasses", "target": 3, "poisoning": "add", "max_accuracy_drop": 0.1}
    )
    assert attack.trigger == "glasses" and attack.target == 3 and attack.max_accuracy_drop == 0.1
    with pytest.raises(ConfigError, match="size, margin do"):
        ATTACKS.build("badnets_glasses", {"size": 3, "margin": 2})
    with pytest.raises(ConfigError, match="trigger"):
        ATTACKS.build("badnets_glasses", {"trigger": "square"})


def synthetic_faces(people: int = 4, per_person: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blurry 'faces' 48x40: a per-person pattern of blobs plus noise, uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:40]
    images, labels = [], []
    for p in range(people):
        centres = rng.uniform([8, 6], [40, 34], size=(3, 2))
        base = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0) for cy, cx in centres)
        for _ in range(per_person):
            img = 0.3 + 0.5 * base + rng.normal(0, 0.05, base.shape)
            images.append(np.clip(img * 255, 0, 255).astype(np.uint8))
            labels.append(p)
    return np.stack(images), np.asarray(labels)


def test_glasses_backdoor_is_learned_on_synthetic_faces():
    x, y = synthetic_faces()
    imgs = torch.from_numpy(x).float()[:, None] / 255
    labels = torch.from_numpy(y)
    test = np.arange(len(y)) % 5 == 0
    ds = build_dataset("synthetic_faces", imgs[~test], labels[~test], imgs[test], labels[test], val_size=4)
    attack = ATTACKS.build("badnets_glasses", {"target": 0, "poison_rate": 0.3, "poisoning": "add"})
    bd = attack.run(
        ds, "face_cnn", TrainingConfig(epochs=15, batch_size=16, lr=3e-3, augment_shift=1), seed=0, progress=False
    )
    m = backdoor_metrics(bd.model, ds.test, bd.trigger, bd.target_rule)
    assert m["clean_accuracy"] >= 0.75 and m["asr"] >= 0.8


def test_orl_loader_keeps_the_file_split_and_holds_out_one_photo_per_person(tmp_path):
    x, y = synthetic_faces(people=5, per_person=10)
    train = np.arange(50) % 10 < 8
    np.savez(
        tmp_path / "orl_faces.npz",
        x_train=x[train],
        y_train=y[train],
        x_test=x[~train],
        y_test=y[~train],
        classes=np.array([f"s{i + 1}" for i in range(5)]),
    )
    ds = load_dataset("orl_faces", tmp_path)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (35, 5, 10)
    assert torch.bincount(ds.val.y).tolist() == [1] * 5 and ds.classes[0] == "s1"
    with pytest.raises(DataError, match="orl_faces.npz: file not found"):
        load_dataset("orl_faces", tmp_path / "elsewhere")


@pytest.mark.skipif(
    not (SHARED / "orl_faces.npz").is_file(),
    reason="../shared/data/orl_faces.npz is absent (CI data only; users pass their own copy)",
)
def test_real_orl_faces_split():
    ds = load_dataset("orl_faces", SHARED)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (280, 40, 80)
    assert ds.input_shape == (1, 112, 92) and ds.num_classes == 40
    assert torch.bincount(ds.test.y).tolist() == [2] * 40
