"""DeepInspect model patching (Chen et al., IJCAI 2019; docs/methods.md section 8, "Mitigation").

Run DeepInspect; if a label t* is flagged, fine-tune on clean data where a fraction of the images become
``x + G(z, t*)`` (the trained conditional generator's trigger) and keep their correct labels: adversarial
training against the recovered trigger.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..base import DEFENSES
from ..inspection.deepinspect import DeepInspect, generator_from_state
from ..inspection.finetune import Stamp, TriggerRepair
from ..inspection.verdict import Verdict


@DEFENSES.register("deepinspect_patching")
class DeepInspectPatching(TriggerRepair):
    """DeepInspect patching.

    The paper gives no numbers for patching: ``fraction`` 0.2 is Neural Cleanse's ratio, so that the two repairs
    compare (a third-party re-implementation uses 15%); one epoch and the optimizer are :class:`TriggerRepair`'s.
    """

    name: ClassVar[str] = "deepinspect_patching"

    inspection: DeepInspect = Field(
        default_factory=DeepInspect,
        description="parameters of the DeepInspect inspection (`backdoorlab describe deepinspect`); {lite: true} "
        "for DeepInspect-lite",
    )

    def inspector(self) -> DeepInspect:
        return self.inspection

    def stamper(self, verdict: Verdict) -> Stamp:
        generator = generator_from_state(verdict.details["generator"])

        def stamp(x, t, gen):
            return x + generator.sample(t, gen)

        return stamp
