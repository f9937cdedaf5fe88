"""The recipe variants a tune tries: one registered family per recipe, each a grid of typed configs.

A variant is a frozen record: the recipe, its typed config (the recipe's own config class, built through
``from_dict`` so a grid entry is validated exactly like a user's ``--option``), and whether the accuracy
search keeps the most sensitive layers in float (``mixed``). Its ``name`` is a label derived from the fields
that differ from the recipe's defaults; nothing parses it back.

A family says when it applies (``applies`` returns the reason it does not): int8-static needs calibration
data, int4 needs MatMuls, the mixed-precision search needs an accuracy budget.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgekit.config import from_dict, to_dict
from edgekit.errors import UsageError
from edgekit.registry import Registry


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """What the families need to know about a model, read from its fp32 package."""

    op_types: frozenset[str]
    has_calibration: bool
    max_accuracy_drop: float | None


@dataclass(frozen=True, kw_only=True)
class Variant:
    recipe: str
    config: Any  # the recipe's config dataclass
    mixed: bool = False  # run the sensitivity search (layers kept in float) to meet the accuracy budget

    @property
    def options(self) -> dict[str, Any]:
        """Only the fields that differ from the recipe's defaults: what a user would pass as ``--option``."""
        default = to_dict(type(self.config)())
        return {k: v for k, v in to_dict(self.config).items() if default.get(k) != v}

    @property
    def name(self) -> str:
        parts = [self.recipe] + [f"{k}={_short(v)}" for k, v in sorted(self.options.items())]
        return ",".join(parts) + ("+mixed" if self.mixed else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "recipe": self.recipe, "options": self.options, "mixed": self.mixed}


def _short(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclass(frozen=True, kw_only=True)
class VariantFamily:
    recipe: str
    # None when the family applies to the model, else the reason it does not.
    applies: Callable[[ModelFacts], str | None]
    grid: Callable[[ModelFacts], Sequence[Mapping[str, Any]]]
    mixed: bool = False


FAMILIES: Registry[VariantFamily] = Registry("variant family")


def _always(facts: ModelFacts) -> str | None:
    return None


def _needs_matmul(facts: ModelFacts) -> str | None:
    return None if "MatMul" in facts.op_types else "int4 quantizes MatMul weights and this graph has no MatMul"


def _needs_calibration(facts: ModelFacts) -> str | None:
    return None if facts.has_calibration else "int8-static needs calibration data (pass --calibration DATA)"


def _needs_budget(facts: ModelFacts) -> str | None:
    return (
        None if facts.max_accuracy_drop is not None else "mixed precision searches to --max-accuracy-drop; none given"
    )


def _mixed_static(facts: ModelFacts) -> str | None:
    return _needs_budget(facts) or _needs_calibration(facts)


FAMILIES.add("fp32", VariantFamily(recipe="fp32", applies=_always, grid=lambda f: [{}]))
FAMILIES.add("fp16", VariantFamily(recipe="fp16", applies=_always, grid=lambda f: [{}]))
# The weight types are explicit: "auto" resolves on the exporting host, and the package goes to another CPU
# (plain int8 suits Arm dot products, pair-safe int8 suits x86 without VNNI, uint8 is the u8u8 kernel).
FAMILIES.add(
    "int8-dynamic",
    VariantFamily(
        recipe="int8-dynamic",
        applies=_always,
        grid=lambda f: [
            {"weight_type": w, "per_channel": pc, "smoothing": sm}
            for w in ("int8-pair-safe", "int8", "uint8")
            for pc in (True, False)
            for sm in (True, False)
        ],
    ),
)
FAMILIES.add(
    "int8-static",
    VariantFamily(
        recipe="int8-static",
        applies=_needs_calibration,
        grid=lambda f: [{"method": m} for m in ("minmax", "entropy", "percentile")],
    ),
)
FAMILIES.add(
    "int4",
    VariantFamily(
        recipe="int4",
        applies=_needs_matmul,
        grid=lambda f: [{"block_size": b, "accuracy_level": a} for b in (32, 128) for a in (4, None)],
    ),
)
# Mixed precision: the recipe's defaults, then the most sensitive layers kept in float until the budget holds.
FAMILIES.add(
    "int8-dynamic+mixed", VariantFamily(recipe="int8-dynamic", applies=_needs_budget, grid=lambda f: [{}], mixed=True)
)
FAMILIES.add(
    "int8-static+mixed", VariantFamily(recipe="int8-static", applies=_mixed_static, grid=lambda f: [{}], mixed=True)
)


@dataclass(frozen=True, kw_only=True)
class Skipped:
    family: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "reason": self.reason}


def enumerate_variants(facts: ModelFacts) -> tuple[list[Variant], list[Skipped]]:
    """Every variant of every family that applies (fp32 first), and the families that do not, with why."""
    from exporters.recipes import RECIPES

    variants: list[Variant] = []
    skipped: list[Skipped] = []
    for name, family in FAMILIES.items():
        reason = family.applies(facts)
        if reason is not None:
            skipped.append(Skipped(family=name, reason=reason))
            continue
        cls = RECIPES.get(family.recipe).config_cls
        for options in family.grid(facts):
            config = from_dict(cls, dict(options), what=f"recipe {family.recipe}")
            variants.append(Variant(recipe=family.recipe, config=config, mixed=family.mixed))
    return variants, skipped


def select(variants: Sequence[Variant], patterns: Sequence[str] | None, max_trials: int | None) -> list[Variant]:
    """The variants whose name or recipe matches one of ``patterns`` (shell-style), fp32 always kept first."""
    chosen = list(variants)
    if patterns:
        chosen = [v for v in variants if any(_matches(v, p) for p in patterns)]
        if not chosen:
            known = ", ".join(v.name for v in variants)
            raise UsageError(
                f"--variants {', '.join(patterns)} matches none of this model's variants",
                hint=f"use a recipe name or a shell pattern over these names: {known}",
                param="variants",
            )
    baseline = next(v for v in variants if v.recipe == "fp32" and not v.options)
    chosen = [baseline] + [v for v in chosen if v != baseline]
    if max_trials is not None:
        if max_trials < 1:
            raise UsageError("max_trials must be >= 1", param="max_trials")
        chosen = chosen[:max_trials]
    return chosen


def _matches(v: Variant, pattern: str) -> bool:
    return fnmatch.fnmatchcase(v.name, pattern) or v.recipe == pattern or v.name == pattern
