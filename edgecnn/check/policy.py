"""The gate's thresholds and how it decides: :class:`Policy`, read from a YAML file, a mapping or the
command line through the shared options loader (:class:`edgecnn.options.Options`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from ..errors import InvalidInput, OptionError, suggest
from ..limits import MAX_BATCH, MAX_RATIO, MAX_RUNS, MAX_SECONDS, MAX_SEED, MAX_THREADS
from ..options import Options, bounded, read_yaml_mapping

#: the policy file format this version reads
POLICY_VERSION = 1
EXAMPLE = "examples/policies/default.yaml"


class PolicyError(InvalidInput):
    """A policy file (or mapping) whose content is not usable: fix the file (exit 1)."""


def _bad(key: str, why: str):
    raise OptionError(f"{key} {why}.")


@dataclass
class Policy(Options):
    """Thresholds of the gate. ``None`` switches a check off. Accuracy drops are in percentage points
    (``max_top1_drop: 1.0`` = at most 1 point, e.g. 98.0 % -> 97.0 %); agreement is a fraction.

    A policy file's keys are this class's fields (snake_case; kebab-case is accepted too) plus
    ``version: 1``. A bad file raises :class:`PolicyError` (exit 1); a value that breaks a rule given any
    other way (command-line overrides, ``Policy(...)``) raises :class:`~edgecnn.errors.OptionError` (exit 2).
    """

    ERROR: ClassVar[type[Exception]] = PolicyError
    IGNORED_KEYS: ClassVar[tuple[str, ...]] = ("version",)

    max_top1_drop: float | None = bounded(1.0, -100, 100)  # pt; original top-1 minus candidate top-1
    max_top5_drop: float | None = bounded(None, -100, 100)  # pt
    min_agreement: float | None = bounded(None, 0, 1)  # fraction of images with the same top-1 prediction
    max_class_drop: float | None = bounded(None, -100, 100)  # pt; worst per-class accuracy drop
    max_kl: float | None = bounded(None, 0, MAX_RATIO)  # nats; mean KL(original || candidate) of the softmax outputs
    min_speedup: float | None = bounded(None, 0, MAX_RATIO, lo_open=True)  # x; original latency / candidate latency
    max_latency_ratio: float | None = bounded(None, 0, MAX_RATIO, lo_open=True)  # x; candidate / original latency
    max_size_ratio: float | None = bounded(None, 0, MAX_RATIO, lo_open=True)  # x; candidate / original file bytes
    decide_on: str = "ci"  # ci | point (see edgecnn.check)
    confidence: float = bounded(0.95, 0.5, 1, hi_open=True)
    bootstrap_resamples: int = bounded(10_000, 1000, MAX_RUNS)
    seed: int = bounded(0, 0, MAX_SEED)
    latency_batch_size: int = bounded(1, 1, MAX_BATCH)
    latency_min_time_s: float = bounded(1.0, 0, MAX_SECONDS, lo_open=True)
    latency_warmup: int = bounded(10, 0, MAX_RUNS)
    latency_min_repeats: int = bounded(20, 1, MAX_RUNS)
    latency_threads: int | None = bounded(None, 1, MAX_THREADS)
    baseline_accuracy_tolerance: float = bounded(0.5, 0, 100)  # pt, absolute
    baseline_latency_tolerance: float = bounded(0.15, 0, MAX_RATIO)  # relative (0.15 = 15 % slower is a regression)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data, *, source: str = "policy") -> Policy:
        """A policy from a mapping of its keys (``source`` names it in errors): PolicyError when unusable."""
        if isinstance(data, dict):
            version = data.get("version", POLICY_VERSION)
            if version != POLICY_VERSION:
                raise PolicyError(
                    f"{source}: policy version {version!r} is not supported; use version: {POLICY_VERSION}."
                )
            known = cls.keys()
            for raw_key in data:  # policy files are snake_case: suggest in their spelling
                key = cls.normalise_key(raw_key)
                if key not in known and key not in cls.IGNORED_KEYS:
                    raise PolicyError(
                        f"{source}: unknown key '{raw_key}'.{suggest(key, known)} Known keys: {', '.join(known)}."
                    )
        policy = cls.from_mapping(data, where=source, validate=False, bounds=False)  # validated next
        try:
            policy.validate()
        except OptionError as exc:  # the values came from the file: the file is what to fix
            raise PolicyError(f"{source}: {exc}") from None
        return policy

    @classmethod
    def load(cls, path: str | os.PathLike) -> Policy:
        """Read a YAML (or JSON) policy file; unknown keys are rejected with the nearest known key."""
        data = read_yaml_mapping(path, what="Policy file", example=EXAMPLE, error=PolicyError)
        return cls.from_dict(data, source=f"Policy file '{path}'")

    # -- rules ---------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise OptionError naming the first rule these thresholds break."""
        for key in ("max_top1_drop", "max_top5_drop", "max_class_drop"):
            v = getattr(self, key)
            if v is not None and not -100.0 <= v <= 100.0:
                _bad(key, f"is in percentage points and must be within [-100, 100], got {v}")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            _bad("min_agreement", f"is a fraction and must be within [0, 1], got {self.min_agreement} (0.98 = 98 %)")
        if self.max_kl is not None and self.max_kl < 0:
            _bad("max_kl", f"must be >= 0, got {self.max_kl}")
        for key in ("min_speedup", "max_latency_ratio", "max_size_ratio", "latency_min_time_s"):
            v = getattr(self, key)
            if v is not None and v <= 0:
                _bad(key, f"must be > 0, got {v}")
        if self.decide_on not in ("ci", "point"):
            _bad("decide_on", f"must be 'ci' or 'point', got {self.decide_on!r}")
        if not 0.5 <= self.confidence < 1.0:
            _bad("confidence", f"must be within [0.5, 1), got {self.confidence}")
        if self.bootstrap_resamples < 1000:
            _bad("bootstrap_resamples", f"must be >= 1000 for a stable interval, got {self.bootstrap_resamples}")
        for key in ("latency_batch_size", "latency_min_repeats"):
            if getattr(self, key) < 1:
                _bad(key, f"must be >= 1, got {getattr(self, key)}")
        if self.latency_warmup < 0:
            _bad("latency_warmup", f"must be >= 0, got {self.latency_warmup}")
        if self.latency_threads is not None and self.latency_threads < 1:
            _bad("latency_threads", f"must be >= 1, got {self.latency_threads}")
        if self.baseline_accuracy_tolerance < 0 or self.baseline_latency_tolerance < 0:
            _bad("baseline tolerances", "must be >= 0")

    @property
    def needs_latency(self) -> bool:
        return self.min_speedup is not None or self.max_latency_ratio is not None


def resolve_policy(policy) -> Policy:
    """Accept a Policy, a dict, a path to a YAML file, or None (defaults)."""
    if policy is None:
        return Policy()
    if isinstance(policy, Policy):
        policy.validate()
        return policy
    if isinstance(policy, dict):
        return Policy.from_dict(policy)
    return Policy.load(policy)
