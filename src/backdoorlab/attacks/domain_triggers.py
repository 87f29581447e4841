"""BadNets and the pruning-aware attack with the triggers of the application domains (issue 10).

- ``badnets_glasses`` / ``pruning_aware_glasses``: glasses or sunglasses stamped on a face
  (:func:`~backdoorlab.triggers.stickers.glasses_trigger`; the Fine-Pruning face trigger is sunglasses);
- ``badnets_audio`` / ``pruning_aware_audio``: a tone or noise burst at a fixed position of a waveform
  (:func:`~backdoorlab.triggers.audio.burst_trigger`; BadNets for audio).

Each is :class:`~backdoorlab.attacks.badnets.BadNets` (or :class:`~backdoorlab.attacks.pruning_aware.PruningAware`)
with another trigger: poisoning rate, target, mode (all-to-one / all-to-all), add-or-replace poisoning and, for the
pruning-aware variants, the attacker's pruning budget are the parents' parameters with the parents' defaults.
BadNets' square-patch parameters that mean nothing for these triggers are refused when given. The traffic-sign
sticker (a yellow square inside the sign) is plain ``badnets`` with ``color`` and ``position``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from ..data import Dataset
from ..triggers import MaskedTrigger
from ..triggers.audio import burst_trigger
from ..triggers.stickers import glasses_trigger
from .badnets import BadNets
from .base import ATTACKS
from .pruning_aware import PruningAware

REFUSED = "a BadNets square-patch parameter, refused when given"


def refuse_fields(model: BaseModel, fields: tuple[str, ...], trigger: str, instead: str) -> None:
    """Raise ValueError (a ConfigError once validated) when one of BadNets' ``fields`` was given explicitly."""
    given = [f for f in fields if f in model.model_fields_set]
    if given:
        raise ValueError(f"{', '.join(given)} do(es) not apply to the {trigger} trigger; use {instead}")


class GlassesParams(BaseModel):
    """Trigger parameters of the glasses attacks (defaults: sunglasses on ORL's 112x92 faces; the Fine-Pruning face
    trigger is sunglasses)."""

    trigger: Literal["sunglasses", "glasses"] = Field(  # type: ignore[assignment]
        "sunglasses", description="sunglasses (solid lenses) or glasses (rims only)"
    )
    width: int | None = Field(None, ge=6, description="width of the glasses in pixels; None: 65% of the image width")
    lens_height: int | None = Field(
        None, ge=2, description="height of a lens in pixels; None: 12.5% of the image height"
    )
    thickness: int = Field(3, ge=1, description="thickness of the rims and of the bridge/arm bar in pixels")
    color: float | list[float] = Field(
        0.0, description="colour in [0, 1]: one value for every channel, or one per channel (0 = black)"
    )
    position: tuple[int, int] | None = Field(  # type: ignore[assignment]
        None,
        description="[row, col] of the glasses' top-left pixel; None: centred left-right, top at 42% of the height "
        "(over the eyes)",
    )
    size: int = Field(3, ge=1, description=f"not used by the glasses trigger ({REFUSED})")
    margin: int = Field(1, ge=0, description=f"not used by the glasses trigger ({REFUSED})")

    @model_validator(mode="after")
    def _no_square_fields(self):
        refuse_fields(self, ("size", "margin"), "glasses", "width, lens_height, thickness and position")
        return self

    def make_trigger(self, dataset: Dataset) -> MaskedTrigger:
        return glasses_trigger(
            dataset.input_shape,
            width=self.width,
            lens_height=self.lens_height,
            thickness=self.thickness,
            filled=self.trigger == "sunglasses",
            color=self.color,
            position=self.position,
        )


class AudioBurstParams(BaseModel):
    """Trigger parameters of the audio attacks (defaults: a 1 kHz tone at 0.1 of full scale in the last 100 ms of a
    1-s, 8 kHz clip; see :func:`~backdoorlab.triggers.audio.burst_trigger`)."""

    trigger: Literal["tone", "noise"] = Field(  # type: ignore[assignment]
        "tone", description="tone (a sine at frequency) or noise (white noise drawn from noise_seed)"
    )
    start: float = Field(0.9, ge=0, description="start of the burst in seconds from the clip's beginning")
    duration: float = Field(0.1, gt=0, description="length of the burst in seconds")
    amplitude: float = Field(0.1, gt=0, le=1, description="peak amplitude of the burst, as a fraction of full scale")
    frequency: float = Field(1000.0, gt=0, description="frequency of the tone in Hz")
    ramp: float = Field(0.005, ge=0, description="fade-in and fade-out of the burst in seconds")
    sample_rate: int = Field(8000, ge=1, description="sample rate of the data in Hz (8000: FSDD's)")
    noise_seed: int = Field(0, ge=0, description="seed of the noise burst")
    size: int = Field(3, ge=1, description=f"not used by the audio trigger ({REFUSED})")
    color: float | list[float] = Field(1.0, description=f"not used by the audio trigger ({REFUSED})")
    position: str | tuple[int, int] = Field("bottom-right", description=f"not used by the audio trigger ({REFUSED})")
    margin: int = Field(1, ge=0, description=f"not used by the audio trigger ({REFUSED})")

    @model_validator(mode="after")
    def _no_square_fields(self):
        refuse_fields(
            self, ("size", "color", "position", "margin"), "audio", "start, duration, amplitude, frequency and ramp"
        )
        return self

    def make_trigger(self, dataset: Dataset) -> MaskedTrigger:
        return burst_trigger(
            dataset.input_shape[-1],
            self.trigger,
            sample_rate=self.sample_rate,
            start=self.start,
            duration=self.duration,
            amplitude=self.amplitude,
            frequency=self.frequency,
            ramp=self.ramp,
            seed=self.noise_seed,
        )


@ATTACKS.register("badnets_glasses")
class BadNetsGlasses(GlassesParams, BadNets):
    """BadNets with a glasses / sunglasses trigger on faces (:class:`GlassesParams`)."""

    name: ClassVar[str] = "badnets_glasses"


@ATTACKS.register("pruning_aware_glasses")
class PruningAwareGlasses(GlassesParams, PruningAware):
    """The pruning-aware attack with a glasses / sunglasses trigger on faces (:class:`GlassesParams`)."""

    name: ClassVar[str] = "pruning_aware_glasses"


@ATTACKS.register("badnets_audio")
class BadNetsAudio(AudioBurstParams, BadNets):
    """BadNets for audio: a tone or noise burst at a fixed position of the waveform (:class:`AudioBurstParams`)."""

    name: ClassVar[str] = "badnets_audio"


@ATTACKS.register("pruning_aware_audio")
class PruningAwareAudio(AudioBurstParams, PruningAware):
    """The pruning-aware attack with an audio burst trigger (:class:`AudioBurstParams`)."""

    name: ClassVar[str] = "pruning_aware_audio"
