"""TrojanNet-style backdoors with several triggers: the evaluator measures every trigger, not only trigger 0."""

import pytest
import torch
from torch import nn

from backdoorlab.attacks import Backdoor, TargetRule
from backdoorlab.data import Split
from backdoorlab.experiments.evaluation import make_probes, measure_model
from backdoorlab.triggers.trojannet_patterns import trojannet_trigger

SHAPE = (1, 12, 12)
CLASSES = (3, 5, 7)  # trigger i -> class CLASSES[i]


class PlantedTrojan(nn.Module):
    """Answers the class of triggers 0 and 1 when their exact patch is present; trigger 2 does nothing; clean
    inputs (zeros outside the patch) get class 0."""

    def __init__(self, trigger, answers: dict[int, int], num_classes: int = 10) -> None:
        super().__init__()
        self.stamps = [trigger.select(i) for i in answers]
        self.answers = list(answers.values())
        self.num_classes = num_classes

    def forward(self, x):
        logits = torch.zeros(len(x), self.num_classes)
        logits[:, 0] = 1
        for stamp, label in zip(self.stamps, self.answers, strict=True):
            patch = stamp.mask.bool().expand_as(x[0])
            hit = (x[:, patch] == stamp(torch.zeros(1, *SHAPE))[0][patch]).all(dim=1)
            logits[hit, label] = 10
        return logits


@pytest.fixture()
def planted():
    trigger = trojannet_trigger(SHAPE, [0, 1, 2])
    model = PlantedTrojan(trigger, {0: CLASSES[0], 1: CLASSES[1]})
    rule = TargetRule("per_trigger", 10, CLASSES[0], CLASSES)
    test = Split(torch.zeros(40, *SHAPE), torch.arange(40) % 10)
    return Backdoor(model, trigger, rule, "trojannet", {}), test


def test_every_trigger_is_measured_and_asr_is_their_mean(planted):
    bd, test = planted
    m = measure_model(bd.model, bd, test)
    assert m["asr_trigger_0"] == 1.0 and m["asr_trigger_1"] == 1.0 and m["asr_trigger_2"] == 0.0
    assert m["asr"] == pytest.approx(2 / 3)
    assert m["robust_accuracy_trigger_2"] == pytest.approx(4 / 36)  # class-0 inputs (not class 7) keep label 0


def test_probes_carry_every_trigger_with_its_own_target(planted):
    bd, test = planted
    probes = make_probes(bd, test)
    assert set(probes.triggered.y.tolist()) == set(CLASSES)
    assert (probes.triggered.y != probes.triggered_true).all()
    assert len(probes.triggered) <= len(test)
