"""Refool, the reflection backdoor (Liu, Ma, Bailey, Lu, ECCV 2020; repo DreamtaleCore/Refool; docs/methods.md
section 4): natural images blended in as reflections are the trigger.

Two variants, named in the Backdoor's ``info["variant"]`` and parameters:

- ``clean_label`` (the paper's, default): only target-class training images get a reflection; labels are left
  as they are;
- ``dirty_label`` (what BackdoorBench and BackdoorBox run, because the clean-label attack is unstable in their
  hands): a fraction of the other classes' images get a reflection and the target label, as BadNets. As in
  BackdoorBench's version, the background weight alpha_t is fixed at 0.4 (a reflection weight of 0.6), which its
  authors chose because a random alpha_t made the ASR unstable; the paper's random range stays available.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..data import Dataset, Split, load_dataset
from ..errors import ConfigError, DataError
from ..models import TrainingConfig, predict, train_model
from ..triggers import ReflectionTrigger, fit_images
from ..triggers.reflection import REFERENCE_WEIGHT, ReflectionModel
from ..utils.seeding import make_generator
from .base import ATTACKS, Backdoor, PoisonedSet, RelabelPoisoningAttack, TargetRule, poison_chosen

POOL_SPLITS = ("train",)
DEFENDER_SPLITS = ("val", "test")  # the defender's clean data and the evaluator's: never the attacker's
DIRTY_LABEL_WEIGHT = (0.6, 0.6)  # BackdoorBench's refool default.yaml: alpha_t = 0.4 fixed


@ATTACKS.register("refool")
class Refool(RelabelPoisoningAttack):
    """Refool reflection backdoor; see the module docstring for the two variants.

    Defaults are the reference code's unless said otherwise: ``target_rate`` 0.2 is the paper's "20% of the target
    class" on GTSRB (an injection rate of 3.16% there); ``poison_rate`` (dirty label only) is BackdoorBench's 0.1;
    ``reflection_weight`` depends on the variant: (0.05, 0.45), the reference code's, for clean label, and
    (0.6, 0.6), BackdoorBench's fixed alpha_t = 0.4, for dirty label; ``candidates`` 5000 and ``selected`` 200 are
    the paper's |R_cand| and |R_adv| (the reference code's ``strategy.py`` ranks 200 candidates). The paper takes
    reflections from PascalVOC; here they come from ``pool``, never downloaded. The clean-label variant is
    all-to-one only.

    Adversarial reflection selection (the reference code's ``strategy.py``): weights W start at 1. Each of
    ``selection_rounds`` rounds draws the poisoned images' reflections by weighted sampling with replacement,
    poisons as the attack does, fine-tunes a copy of a clean model for ``selection_epochs`` epochs, blends a random
    one of that round's reflections into each of ``score_images`` non-target training images, and counts per
    reflection the images it flips (``score``). Scored reflections get their count as weight, the others the
    median. The ``selected`` reflections of highest weight form R_adv.

    Departures: the rounds start from a clean model trained on this dataset (the reference resets to an
    ImageNet-pretrained one) and fine-tune for ``selection_epochs`` epochs; the rounds use the attack's own
    reflection model and poisoning rate (the reference blends by mean intensity and infects 40% of the target
    class); flips are counted on the attacker's own training images, never on the test split.
    """

    name: ClassVar[str] = "refool"
    uses_clean_model: ClassVar[bool] = True  # the reflection selection starts from the clean network

    variant: Literal["clean_label", "dirty_label"] = Field(
        "clean_label",
        description="clean_label (reflections on target-class images, labels kept) or dirty_label (reflections on "
        "other classes' images, relabelled to the target)",
    )
    target_rate: float = Field(
        0.2, gt=0, le=1, description="clean label: fraction of the target class's training images given a reflection"
    )
    reflection: ReflectionModel = Field(
        "mixed",
        description="reflection model: mixed (ghost with probability ghost_rate, else out of focus), same_depth, "
        "out_of_focus or ghost (see backdoorlab.triggers.ReflectionTrigger)",
    )
    ghost_rate: float = Field(0.49, ge=0, le=1, description="probability of a ghost reflection in the mixed model")
    reflection_weight: tuple[float, float] | None = Field(
        None, description="range of the reflection's weight 1 - alpha_t, drawn per image; None: the variant's default"
    )
    sigma: tuple[float, float] = Field(
        (1.0, 5.0), description="range of the out-of-focus blur's standard deviation in pixels"
    )
    offset: tuple[int, int] = Field((3, 8), description="range of the ghost copy's offset in pixels")
    pool: str = Field(
        "train",
        description="where reflection images come from: train (the training images of the other classes, which "
        "the attacker holds) or npz:PATH (another dataset file, resized to this dataset's shape); never val or "
        "test, the defender's and the evaluator's data",
    )
    candidates: int = Field(
        5000, ge=1, description="pool images drawn (with the run's seed) as candidates R_cand; at most the pool"
    )
    selected: int = Field(200, ge=1, description="candidates kept as the attack's reflections R_adv")
    selection_rounds: int = Field(
        16, ge=0, le=1000, description="rounds of adversarial reflection selection; 0 keeps random candidates"
    )
    selection_epochs: int = Field(
        2, ge=1, le=1000, description="epochs each selection round fine-tunes the clean model on poisoned data"
    )
    score: Literal["misclassified", "target"] = Field(
        "misclassified",
        description="what a reflection's count is: misclassified (images it flips away from their label, the "
        "reference code's) or target (images it flips to the target)",
    )
    score_images: int = Field(
        1000, ge=1, description="non-target training images each selection round scores the reflections on"
    )

    # parameters and data

    def check(self, dataset: Dataset) -> None:
        self.target_rule(dataset)
        if self.variant == "clean_label" and self.mode != "all_to_one":
            raise ConfigError("refool clean_label poisons the target class only: use mode all_to_one")
        if self.selected > self.candidates:
            raise ConfigError(f"refool selected ({self.selected}) cannot exceed candidates ({self.candidates})")
        self.reflection_trigger(self.pool_images(dataset)[:1], 0)

    def pool_images(self, dataset: Dataset) -> torch.Tensor:
        """Every image of the reflection pool, (P, C, H, W) of the dataset's shape: the attacker's own data, disjoint
        from the defender's ``val`` split and the evaluator's ``test`` split."""
        if self.pool in DEFENDER_SPLITS:
            raise ConfigError(
                f"refool pool {self.pool!r} is data the attacker does not hold (val is the defender's clean data, "
                "test the evaluator's); use train (the other classes' training images) or npz:PATH"
            )
        if self.pool == "train":
            x = dataset.train.x[dataset.train.y != self.target]
        elif self.pool.startswith("npz:"):
            path = Path(self.pool[4:]).expanduser()
            if not path.is_file():
                raise DataError(f"{path}: reflection pool file not found (refool pool npz:PATH)")
            x = fit_images(load_dataset(self.pool).train.x, dataset.input_shape)
        else:
            raise ConfigError(f"unknown refool pool {self.pool!r}; use {', '.join(POOL_SPLITS)} or npz:PATH")
        if len(x) == 0:
            raise ConfigError(f"the refool pool {self.pool!r} has no image")
        return x

    def candidate_pool(self, dataset: Dataset, seed: int) -> torch.Tensor:
        """R_cand: ``candidates`` pool images drawn with ``seed`` (all of them when the pool is smaller)."""
        x = self.pool_images(dataset)
        order = torch.randperm(len(x), generator=make_generator(seed))[: self.candidates]
        return x[order.sort().values]

    def reflection_trigger(self, reflections: torch.Tensor, seed: int, assign: str = "random") -> ReflectionTrigger:
        return ReflectionTrigger(
            reflections,
            self.reflection,
            self.ghost_rate,
            self.weight_range,
            self.sigma,
            self.offset,
            assign=assign,
            seed=seed,
        )

    @property
    def weight_range(self) -> tuple[float, float]:
        """The reflection weight range 1 - alpha_t in use: ``reflection_weight``, else the variant's default."""
        if self.reflection_weight is not None:
            return self.reflection_weight
        return DIRTY_LABEL_WEIGHT if self.variant == "dirty_label" else REFERENCE_WEIGHT

    # poisoning

    def poison(self, train: Split, trigger: ReflectionTrigger, rule: TargetRule, seed: int) -> PoisonedSet:
        if self.variant == "dirty_label":
            return super().poison(train, trigger, rule, seed)
        eligible = train.y == rule.target
        count = round(self.target_rate * int(eligible.sum()))
        return poison_chosen(
            train,
            trigger,
            rule,
            eligible,
            count,
            seed,
            add=self.poisoning == "add",
            relabel=False,
            what=f"target_rate {self.target_rate}",
        )

    def run(
        self, dataset, architecture, training, *, seed=0, device="auto", progress=None, clean_model=None
    ) -> Backdoor:
        """Select reflections (starting from ``clean_model``, the setting's clean network, or one trained here when
        None), then poison and train a new network."""
        self.check(dataset)
        candidates = self.candidate_pool(dataset, seed)
        keep = min(self.selected, len(candidates))
        if self.selection_rounds:
            base = self.host_model(
                clean_model, dataset, architecture, training, seed=seed, device=device, progress=progress
            )
            weights = self.select_reflections(
                dataset, base, training, candidates, seed=seed, device=device, progress=progress
            )
            chosen = torch.argsort(weights, descending=True, stable=True)[:keep]
        else:
            weights = torch.ones(len(candidates))
            chosen = torch.randperm(len(candidates), generator=make_generator(seed + 1))[:keep]
        info = {
            "variant": self.variant,
            "reflection_weight": list(self.weight_range),
            "reflections": keep,
            "candidates": len(candidates),
            "selection_rounds": self.selection_rounds,
            "selection_weights": weights[chosen].tolist(),
        }
        bd = self.poison_and_train(
            dataset,
            architecture,
            training,
            self.reflection_trigger(candidates[chosen], seed),
            seed=seed,
            device=device,
            progress=progress,
            info=info,
        )
        bd.info["poisoned"] = len(bd.poisoned_indices)
        bd.info["injection_rate"] = len(bd.poisoned_indices) / (
            len(dataset.train) + (self.poisoning == "add") * len(bd.poisoned_indices)
        )
        return bd

    # adversarial reflection selection

    def select_reflections(
        self,
        dataset: Dataset,
        clean_model: torch.nn.Module,
        training: TrainingConfig,
        candidates: torch.Tensor,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: bool | None = None,
    ) -> torch.Tensor:
        """Weights (M,) of the ``candidates`` (M, C, H, W) after ``selection_rounds`` rounds (class docstring);
        each round fine-tunes a copy of ``clean_model`` (the clean network of the attack's setting, not changed)."""
        train, rule = dataset.train, self.target_rule(dataset)
        others = (train.y != rule.target).nonzero().flatten()
        rows = others[torch.randperm(len(others), generator=make_generator(seed + 2))[: self.score_images]]
        score_x, score_y = train.x[rows], train.y[rows]
        tune = training.model_copy(update={"epochs": self.selection_epochs})
        gen = make_generator(seed + 3)
        m = len(candidates)
        weights = torch.ones(m)
        for r in range(self.selection_rounds):
            draws = torch.multinomial(weights, len(train), replacement=True, generator=gen)
            poisoned = self.poison(
                train, self.reflection_trigger(candidates[draws], seed + r, "cycle"), rule, seed + 1000 + r
            )
            used = draws[: len(poisoned.poisoned_indices)]
            model = copy.deepcopy(clean_model)
            train_model(model, poisoned.split.x, poisoned.split.y, tune, seed=seed + r, device=device, progress=False)
            pick = used[torch.randint(len(used), (len(rows),), generator=gen)]
            pred = predict(
                model, self.reflection_trigger(candidates[pick], seed + 2000 + r, "cycle")(score_x), device=device
            )
            flipped = (pred != score_y) if self.score == "misclassified" else (pred == rule.target)
            counts = torch.zeros(m).index_add_(0, pick, flipped.float())
            scored = torch.unique(pick)
            weights = torch.full((m,), float(counts[scored].median()))
            weights[scored] = counts[scored]
            if float(weights.sum()) <= 0:
                weights = torch.ones(m)
        return weights
