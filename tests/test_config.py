import pytest

from backdoorlab.errors import ConfigError
from backdoorlab.experiments.config import load_config, parse_config


def test_builtin_default_config():
    cfg = load_config()
    assert cfg.dataset.name == "mnist5k" and cfg.model == "badnet_cnn"
    labels = [label for label, _ in cfg.build_attacks()]
    assert labels == ["badnets-all2one", "badnets-all2all"]


def test_attack_params_sit_beside_the_name():
    cfg = parse_config({"attacks": [{"name": "badnets", "poison_rate": 0.05, "label": "bn5"}]})
    ((label, attack),) = cfg.build_attacks()
    assert label == "bn5" and attack.poison_rate == 0.05


@pytest.mark.parametrize(
    "data, message",
    [
        ({"modle": "badnet_cnn"}, "modle: unknown field"),
        ({"training": {"epochs": "many"}}, "training.epochs: Input should be a valid integer"),
        ({"training": {"lr": 0}}, "training.lr"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; valid names: cifar10, digits"),
        ({"model": "vgg"}, "unknown model 'vgg'"),
        ({"attacks": [{"name": "nope"}]}, "unknown attack 'nope'"),
        ({"attacks": [{"name": "badnets", "poison_rate": 2}]}, r"attacks\[0\] \(badnets\).poison_rate"),
        ({"attacks": ["badnets", "badnets"]}, "share a label"),
        ({"defenses": ["strip-x"]}, "unknown defense 'strip-x'"),
        ({"seeds": []}, "seeds"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_config_errors_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("attacks: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
