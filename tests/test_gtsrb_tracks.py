"""GTSRB's val split is drawn by track: no physical sign has frames in both train and val."""

import numpy as np
import pytest

from backdoorlab.data.domains import gtsrb_from_npz, track_split


def _write(path, classes=4, tracks=10, frames=5):
    rng = np.random.default_rng(0)
    n = classes * tracks * frames
    y = np.repeat(np.arange(classes), tracks * frames)
    track = np.tile(np.repeat(np.arange(tracks), frames), classes)  # track ids restart in every class, as in the file
    frame = np.tile(np.arange(frames) * 3, classes * tracks)
    # every frame of a track is the same sign: one image per (class, track), plus a little noise per frame
    sign = rng.integers(0, 200, (classes, tracks, 8, 8, 3))
    x = (sign[y, track] + rng.integers(0, 5, (n, 8, 8, 3))).astype(np.uint8)
    np.savez(
        path,
        x_train=x,
        y_train=y,
        x_test=x[:40],
        y_test=y[:40],
        train_track=track,
        train_frame=frame,
        classes=np.array([f"c{i}" for i in range(classes)]),
    )
    return x, y, track


def test_val_holds_whole_tracks_of_every_class(tmp_path):
    path = tmp_path / "gtsrb.npz"
    _write(path)
    ds = gtsrb_from_npz(path, name="synthetic")
    assert len(ds.train) + len(ds.val) == 200 and len(ds.val) == 4 * 1 * 5  # 10% of 10 tracks per class, all frames
    assert sorted(set(ds.val.y.tolist())) == [0, 1, 2, 3]
    # a val image and a train image of the same track would differ by the per-frame noise only (< 5 levels)
    val, train = ds.val.x.flatten(1), ds.train.x.flatten(1)
    nearest = (val[:, None] - train[None]).abs().amax(-1).min(1).values
    assert float(nearest.min()) > 5 / 255


def test_track_split_never_cuts_a_track():
    y = np.repeat([0, 1, 2], 40)
    track = np.tile(np.repeat(np.arange(8), 5), 3)
    train, val = track_split(y, track, 0.25, seed=1)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(y)
    assert not set(zip(y[train], track[train], strict=True)) & set(zip(y[val], track[val], strict=True))
    assert np.bincount(y[val]).tolist() == [10, 10, 10]  # 2 of 8 tracks per class, 5 frames each


@pytest.mark.parametrize("seed", [1, 2])
def test_track_split_is_fixed_by_its_seed(seed):
    y, track = np.repeat([0, 1], 20), np.tile(np.repeat(np.arange(4), 5), 2)
    assert np.array_equal(track_split(y, track, 0.25, seed)[1], track_split(y, track, 0.25, seed)[1])
