"""Neural Cleanse mitigation by unlearning (Wang et al., S&P 2019; docs/methods.md section 9, "Mitigation").

Run Neural Cleanse; if a label is flagged, fine-tune the model for one epoch on the clean data where 20% of the
images carry that label's reversed trigger (mask + pattern) and keep their correct labels.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..base import DEFENSES
from ..inspection.finetune import Stamp, TriggerRepair
from ..inspection.neural_cleanse import NeuralCleanse
from ..inspection.verdict import Verdict


@DEFENSES.register("nc_unlearning")
class NCUnlearning(TriggerRepair):
    """Neural Cleanse unlearning.

    ``fraction`` 0.2 stamped and one epoch are the paper's unlearning recipe, mirrored by BackdoorBench's
    ``unlearning_ratio`` 0.2; the paper fine-tunes on about 10% of the training data, we on the defender's clean
    split. The fine-tuning optimizer is :class:`TriggerRepair`'s.
    """

    name: ClassVar[str] = "nc_unlearning"

    inspection: NeuralCleanse = Field(
        default_factory=NeuralCleanse,
        description="parameters of the Neural Cleanse inspection (`backdoorlab describe neural_cleanse`), e.g. "
        "{batches_per_epoch: 4}",
    )

    def inspector(self) -> NeuralCleanse:
        return self.inspection

    def stamper(self, verdict: Verdict) -> Stamp:
        masks, patterns = verdict.masks, verdict.patterns
        assert masks is not None and patterns is not None

        def stamp(x, t, gen):
            return (1 - masks[t]) * x + masks[t] * patterns[t]

        return stamp
