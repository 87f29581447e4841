import pytest
import torch

from backdoorlab.errors import ConfigError, ModelFileError
from backdoorlab.models import (
    MODELS,
    Normalize,
    TrainingConfig,
    build_model,
    load_checkpoint,
    predict,
    predict_logits,
    save_checkpoint,
    train_model,
)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("badnet_cnn", (1, 28, 28)),
        ("badnet_cnn", (1, 8, 8)),
        ("carlini_mnist", (1, 28, 28)),
        ("cnn_small", (3, 32, 32)),
        ("preact_resnet18", (3, 32, 32)),
    ],
)
def test_architectures_output_shape(name, shape):
    model = build_model(name, shape, 7)
    assert model(torch.rand(3, *shape)).shape == (3, 7)


def test_badnet_cnn_matches_paper_on_mnist():
    net = build_model("badnet_cnn", (1, 28, 28), 10).net
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert linears[0].in_features == 512 and linears[0].out_features == 512
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(16, (5, 5)), (32, (5, 5))]


def test_carlini_mnist_has_the_studys_layers():
    net = build_model("carlini_mnist", (1, 28, 28), 10).net
    convs = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert convs == [32, 32, 64, 64]
    assert linears == [(64 * 4 * 4, 200), (200, 200), (200, 10)]


def test_normalize_is_first_layer():
    model = build_model("badnet_cnn", (1, 28, 28), 10, mean=[0.5], std=[0.25])
    assert isinstance(model[0], Normalize)
    out = model[0](torch.full((1, 1, 2, 2), 0.75))
    assert torch.allclose(out, torch.ones(1, 1, 2, 2))


def test_build_model_errors():
    with pytest.raises(ConfigError, match="valid names: badnet_cnn"):
        build_model("vgg99", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="one per channel"):
        build_model("cnn_small", (3, 32, 32), 10, mean=[0.5], std=[0.5])
    assert set(MODELS.names()) >= {"badnet_cnn", "cnn_small", "preact_resnet18"}


def test_seeded_init_is_reproducible():
    a = build_model("badnet_cnn", (1, 8, 8), 10, seed=3)
    b = build_model("badnet_cnn", (1, 8, 8), 10, seed=3)
    c = build_model("badnet_cnn", (1, 8, 8), 10, seed=4)
    wa, wb, wc = (m.net[0][0].weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_training_learns_digits_and_is_deterministic(digits, fast_training):
    def trained():
        m = build_model("badnet_cnn", digits.input_shape, 10, digits.mean, digits.std, seed=0)
        return train_model(m, digits.train.x, digits.train.y, fast_training, seed=0, progress=False)

    a, b = trained(), trained()
    acc = float((predict(a, digits.test.x) == digits.test.y).float().mean())
    assert acc > 0.9
    assert torch.equal(predict_logits(a, digits.test.x), predict_logits(b, digits.test.x))


def test_training_config_rejects_bad_values():
    with pytest.raises(ValueError):
        TrainingConfig(lr=-1)
    with pytest.raises(ValueError):
        TrainingConfig(optimizer="rmsprop")


def test_checkpoint_round_trip(tmp_path):
    model = build_model("cnn_small", (3, 16, 16), 4, mean=[0.1, 0.2, 0.3], std=[1, 1, 1], seed=1)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, architecture="cnn_small", input_shape=(3, 16, 16), num_classes=4, extra={"a": 1})
    loaded, payload = load_checkpoint(path)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(loaded(x), model.eval()(x))
    assert payload["extra"] == {"a": 1}
    # the file is plain data: it loads with weights_only=True
    assert torch.load(path, weights_only=True)["architecture"] == "cnn_small"
    assert not list(tmp_path.glob(".*tmp"))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="not a readable backdoorlab checkpoint"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ModelFileError, match="format backdoorlab-checkpoint/1 expected"):
        load_checkpoint(other)
