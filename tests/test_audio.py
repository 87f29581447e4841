"""Audio as an input type: waveform scale, fixed length, the fsdd loader, burst triggers, the log-mel front end,
speech_cnn, and STRIP / pruning running on waveforms unchanged. Tiny synthetic clips; the real FSDD file only
where it is present."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from backdoorlab.attacks import ATTACKS
from backdoorlab.data import DATASETS, load_dataset
from backdoorlab.data.audio import SILENCE, fix_length, int16_to_unit, unit_to_amplitude, waveform_dataset
from backdoorlab.defenses import DEFENSES
from backdoorlab.errors import ConfigError, DataError
from backdoorlab.metrics import backdoor_metrics
from backdoorlab.models import TrainingConfig, build_model, predict
from backdoorlab.models.audio_frontend import LogMel, mel_filterbank
from backdoorlab.models.channels import find_site
from backdoorlab.models.replay import split_at
from backdoorlab.triggers.audio import burst_trigger

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RATE = 8000


def tone(freq: float, n: int, amp: float = 0.3, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n) / RATE
    return (amp * 32767 * np.sin(2 * np.pi * freq * t + phase)).astype(np.int16)


def synthetic_clips(per_class: int = 30, length: int = 2048, seed: int = 0):
    """Two 'words': a 300 Hz or a 700 Hz tone of random length, phase and level, plus a little noise."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for label, freq in enumerate((300.0, 700.0)):
        for _ in range(per_class):
            n = int(rng.integers(length // 3, length // 2))
            clip = tone(freq, n, amp=rng.uniform(0.1, 0.4), phase=rng.uniform(0, 6.28)).astype(np.int32)
            clip += rng.integers(-300, 300, n)
            clips.append(np.clip(clip, -32768, 32767).astype(np.int16))
            labels.append(label)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[::5] = True
    return clips, np.asarray(labels), is_test


@pytest.fixture(scope="module")
def tiny_audio():
    clips, labels, is_test = synthetic_clips()
    return waveform_dataset("tiny_audio", clips, labels, is_test, ["low", "high"], length=2048, val_size=0.2)


def test_scale_maps_int16_full_scale_to_unit_interval_with_silence_at_half():
    x = int16_to_unit(np.array([-32768, 0, 32767], dtype=np.int16))
    assert x.dtype == torch.float32
    assert x.tolist() == pytest.approx([0.0, SILENCE, 1.0], abs=1e-7)
    assert SILENCE == pytest.approx(0.5000076, abs=1e-7)
    back = unit_to_amplitude(int16_to_unit(np.array([-16384, 0, 16384])))
    assert back.tolist() == pytest.approx([-0.5, 0.0, 0.5], abs=1e-6)


def test_fix_length_pads_with_silence_at_the_end_and_keeps_the_first_samples():
    out = fix_length([np.array([1, 2, 3], dtype=np.int16), np.arange(10, dtype=np.int16)], 5)
    assert out.dtype == np.int16 and out.shape == (2, 5)
    assert out.tolist() == [[1, 2, 3, 0, 0], [0, 1, 2, 3, 4]]
    with pytest.raises(DataError, match="length must be >= 1"):
        fix_length([], 0)


def test_waveform_dataset_is_image_shaped_with_the_given_split(tiny_audio):
    ds = tiny_audio
    assert ds.input_shape == (1, 1, 2048)
    assert len(ds.test) == 12 and len(ds.train) + len(ds.val) == 48 and len(ds.val) == 10
    assert ds.train.x.dtype == torch.float32 and 0 <= float(ds.train.x.min()) and float(ds.train.x.max()) <= 1
    assert float(ds.test.x[0, 0, 0, -1]) == pytest.approx(SILENCE)  # padded tail is silence
    assert torch.bincount(ds.val.y).tolist() == [5, 5]  # stratified


def _write_fsdd(path: Path, clips, labels, is_test) -> None:
    lengths = np.array([len(c) for c in clips])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    np.savez(
        path,
        audio=np.concatenate(clips),
        offsets=offsets,
        lengths=lengths,
        labels=labels,
        is_test=is_test,
        classes=np.array(["low", "high"]),
    )


def test_fsdd_loader_reads_a_folder_or_the_file_itself(tmp_path):
    clips, labels, is_test = synthetic_clips(per_class=10)
    _write_fsdd(tmp_path / "fsdd.npz", clips, labels, is_test)
    for where in (tmp_path, tmp_path / "fsdd.npz"):
        ds = load_dataset("fsdd", where)
        assert ds.name == "fsdd" and ds.input_shape == (1, 1, 8000) and ds.classes == ("low", "high")
        assert len(ds.test) == 4 and len(ds.train) + len(ds.val) == 16
        first = ds.test.x[0, 0, 0]
        n = len(clips[0])
        assert torch.allclose(first[:n], int16_to_unit(clips[0]))
        assert torch.all(first[n:] == SILENCE)


def test_fsdd_loader_names_the_missing_file_and_keys(tmp_path):
    with pytest.raises(DataError, match="pass --data-dir"):
        DATASETS.get("fsdd")(None)
    with pytest.raises(DataError, match=r"fsdd\.npz: file not found"):
        load_dataset("fsdd", tmp_path)
    np.savez(tmp_path / "fsdd.npz", audio=np.zeros(4, dtype=np.int16))
    with pytest.raises(DataError, match="lacks offsets, lengths, labels, is_test"):
        load_dataset("fsdd", tmp_path)


def test_tone_burst_replaces_the_window_with_a_tone_of_the_given_frequency_and_level():
    trig = burst_trigger(8000, "tone", start=0.5, duration=0.1, amplitude=0.2, frequency=1000.0, ramp=0.005)
    mask = trig.mask
    assert mask.shape == (1, 1, 8000)
    support = mask[0, 0].nonzero().flatten()
    assert int(support.min()) == 4000 and int(support.max()) == 4799
    assert torch.all(mask[0, 0, 4040:4760] == 1) and 0 < float(mask[0, 0, 4000]) < 0.1  # ramps, then flat
    out = trig(torch.full((2, 1, 1, 8000), SILENCE))
    assert torch.all(out[:, :, :, :4000] == SILENCE) and torch.all(out[:, :, :, 4800:] == SILENCE)
    burst = unit_to_amplitude(out[0, 0, 0, 4040:4760]).numpy()
    assert np.abs(burst).max() == pytest.approx(0.2, abs=0.01)
    spectrum = np.abs(np.fft.rfft(burst))
    assert np.fft.rfftfreq(len(burst), 1 / 8000)[spectrum.argmax()] == pytest.approx(1000.0, abs=15)
    assert trig.describe()["kind"] == "tone_burst"


def test_noise_burst_is_fixed_by_its_seed_and_bad_settings_are_refused():
    a, b, c = (burst_trigger(4000, "noise", start=0.1, seed=s).pattern for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ConfigError, match="does not fit"):
        burst_trigger(8000, start=0.95, duration=0.1)
    with pytest.raises(ConfigError, match="tone frequency"):
        burst_trigger(8000, frequency=5000.0)
    with pytest.raises(ConfigError, match="amplitude"):
        burst_trigger(8000, amplitude=0.0)


def test_mel_filterbank_triangles_peak_at_one_and_cover_the_band():
    fb = mel_filterbank(40, 256, 8000)
    assert fb.shape == (40, 129)
    assert float(fb.max(dim=1).values.min()) > 0.5 and float(fb.max()) <= 1.0
    assert torch.all(fb[:, 1:-1].sum(dim=0) > 0)  # every bin inside the band is in some filter
    with pytest.raises(ConfigError, match="f_min < f_max"):
        mel_filterbank(40, 256, 8000, f_max=5000.0)


def test_log_mel_shape_ignores_dc_and_mixing_is_addition():
    front = LogMel(8000)
    x = int16_to_unit(np.stack([tone(1000.0, 8000), tone(250.0, 8000)]))[:, None, None, :]
    spec = front(x)
    assert spec.shape == (2, 1, 40, 8000 // 128 + 1)
    assert torch.allclose(front(x + 0.25), spec, atol=1e-4)  # the DC offset never reaches the spectrum
    centres = torch.tensor([float(torch.argmax(row)) for row in mel_filterbank(40, 256, 8000)]) * 8000 / 256
    band = int(torch.argmin((centres - 1000.0).abs()))
    assert int(spec[0, 0].mean(dim=1).argmax()) == band  # energy where the tone is
    mixed = front(x[:1] + x[1:])  # STRIP's additive superimposition: both tones present
    low = int(torch.argmin((centres - 250.0).abs()))
    assert float(mixed[0, 0, low].mean()) > float(spec[0, 0, low].mean()) + 3


def test_speech_cnn_is_a_prunable_differentiable_classifier_of_waveforms():
    model = build_model("speech_cnn", (1, 1, 8000), 10, (0.5,), (0.02,), seed=0).eval()
    x = torch.rand(3, 1, 1, 8000).requires_grad_(True)
    out = model(x)
    assert out.shape == (3, 10)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    site = find_site(model)
    assert site.channels == 64 and site.chain and split_at(model, site.output) is not None
    with pytest.raises(ConfigError, match=r"shape \(1, 1, L\)"):
        build_model("speech_cnn", (1, 28, 28), 10)


def test_badnets_audio_refuses_square_patch_parameters():
    with pytest.raises(ConfigError, match="size do"):
        ATTACKS.build("badnets_audio", {"size": 3})
    attack = ATTACKS.build("pruning_aware_audio", {"trigger": "noise", "start": 0.1, "mode": "all_to_all"})
    assert attack.trigger == "noise" and attack.mode == "all_to_all"


def test_audio_backdoor_strip_and_pruning_run_on_waveforms_unchanged(tiny_audio):
    """A tone-burst backdoor is learned on synthetic 'words'; STRIP scores it and pruning repairs a copy."""
    ds = tiny_audio
    attack = ATTACKS.build(
        "badnets_audio", {"start": 0.05, "duration": 0.05, "amplitude": 0.3, "poison_rate": 0.3, "target": 1}
    )
    training = TrainingConfig(epochs=12, batch_size=16, lr=5e-3, augment_shift=0)
    bd = attack.run(ds, "speech_cnn", training, seed=0, progress=False)
    m = backdoor_metrics(bd.model, ds.test, bd.trigger, bd.target_rule)
    assert m["clean_accuracy"] >= 0.75 and m["asr"] >= 0.8
    strip = DEFENSES.get("strip")(n_overlays=5)
    strip.fit(bd.model, ds.val, seed=0)
    scores = strip.score(bd.trigger(ds.test.x))
    assert scores.shape == (len(ds.test),) and torch.isfinite(scores).all()
    pruned = DEFENSES.get("pruning")(prune_ratio=0.5).repair(bd.model, ds.val, seed=0)
    assert predict(pruned, ds.test.x).shape == (len(ds.test),)
    weight = pruned.get_submodule(find_site(pruned).layer).weight
    assert int((weight.flatten(1).abs().sum(dim=1) == 0).sum()) == 32  # half of the 64 channels are gone
    assert not math.isnan(m["asr"])


@pytest.mark.skipif(
    not (SHARED / "fsdd.npz").is_file(),
    reason="../shared/data/fsdd.npz is absent (CI data only; users pass their own copy)",
)
def test_real_fsdd_official_split():
    ds = load_dataset("fsdd", SHARED)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (2430, 270, 300)
    assert ds.input_shape == (1, 1, 8000) and ds.classes == tuple(str(i) for i in range(10))
    assert torch.bincount(ds.test.y).tolist() == [30] * 10
    assert ds.mean[0] == pytest.approx(0.5, abs=0.01)
