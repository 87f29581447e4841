import pytest

from backdoorlab.errors import ConfigError
from backdoorlab.experiments.config import load_config, parse_config

# attacks that are BadNets / the pruning-aware attack on the audio and face domains: the default config runs the
# image-domain originals


SOURCE_ATTACKS = {"badnets", "blend", "refool", "pruning_aware", "label_flip", "trojannet"}
SOURCE_DEFENSES = {
    "strip",
    "feature_squeezing",
    "pruning",
    "fine_tuning",
    "fine_pruning",
    "neural_cleanse",
    "deepinspect",
    "nc_unlearning",
    "deepinspect_patching",
}


def test_builtin_default_config():
    cfg = load_config()
    assert cfg.dataset.name == "mnist5k" and cfg.model == "badnet_cnn"
    from backdoorlab.attacks import ATTACKS
    from backdoorlab.defenses import DEFENSES

    # the source's canon, one seed (issue 8); the field's methods live in configs/ files, so the default run keeps
    # its time budget (issue 18); every registered method is named by some ready config (test_ready_configs)
    assert {a.name for _, a in cfg.build_attacks()} == SOURCE_ATTACKS
    assert {d.name for _, d in cfg.build_defenses()} == SOURCE_DEFENSES
    assert SOURCE_ATTACKS <= set(ATTACKS.names()) and SOURCE_DEFENSES <= set(DEFENSES.names())
    assert [s.name for _, s in cfg.build_studies()] == ["fine_pruning_table1"]
    assert cfg.seeds == [0]


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
        (
            {"defenses": ["fs_adversarial"]},
            "'fs_adversarial' is a study, not a defense: move it from defenses to studies",
        ),
        ({"studies": [{"name": "fs_adversarial", "n": 1}]}, r"studies\[0\] \(fs_adversarial\).n"),
        ({"studies": ["fine_pruning_table1"]}, r"studies\[0\] \(fine_pruning_table1\): .*needs fine_tuning"),
        (
            {"defenses": ["strip"], "studies": [{"name": "fs_adversarial", "label": "strip"}]},
            "a study and a defense share the label 'strip'",
        ),
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
