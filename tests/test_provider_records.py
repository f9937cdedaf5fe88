"""One record per execution provider (runtimes.providers.PROVIDERS): its coverage rule and ORT policy resolve."""

from __future__ import annotations

import pytest

from runtimes.providers import PROVIDERS


@pytest.mark.parametrize("name", PROVIDERS.names())
def test_every_provider_record_resolves(name: str) -> None:
    from edgekit.profiler.coverage import COVERAGE_RULES, ProviderRule

    spec = PROVIDERS.get(name)
    rule = spec.coverage()
    if spec.coverage_rule is None:
        assert rule is None and name not in COVERAGE_RULES
    else:
        assert isinstance(rule, ProviderRule) and rule.source
        assert COVERAGE_RULES.get(name) is rule  # the profiler's registry is a view of the records
    assert spec.to_dict()["disabled_optimizers"] == spec.disabled_optimizers()


def test_coverage_rules_come_only_from_provider_records() -> None:
    from edgekit.profiler.coverage import COVERAGE_RULES

    assert sorted(COVERAGE_RULES.names()) == sorted(p.name for p in PROVIDERS if p.coverage_rule)
    assert {"XnnpackExecutionProvider", "NnapiExecutionProvider", "CoreMLExecutionProvider"} <= set(
        COVERAGE_RULES.names()
    )


def test_provider_records_carry_the_session_policy() -> None:
    # The CPU EP keeps Add + LayerNormalization apart (edgekit.ort_policy); GPU EPs have fused kernels.
    assert PROVIDERS.get("CPUExecutionProvider").disabled_optimizers() == ["SkipLayerNormFusion"]
    assert PROVIDERS.get("CUDAExecutionProvider").disabled_optimizers() == []
