"""Execution providers: the registry, selection order, fallbacks (simulated builds), node shares."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import runtimes
from edgekit.devices import EP_CONSTRAINTS, KNOWN_PROVIDERS, get_device
from edgekit.errors import ConfigError, UnknownNameError
from runtimes import providers as P
from runtimes.session import physical_cores

EXPECTED = {
    "CPUExecutionProvider": "cpu",
    "XnnpackExecutionProvider": "xnnpack",
    "NnapiExecutionProvider": "nnapi",
    "CoreMLExecutionProvider": "coreml",
    "QNNExecutionProvider": "qnn",
    "OpenVINOExecutionProvider": "openvino",
    "CUDAExecutionProvider": "cuda",
}


def test_registry_holds_the_issue_providers() -> None:
    assert {spec.name: spec.alias for spec in P.PROVIDERS} == EXPECTED


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_entry_is_consistent(name: str) -> None:
    spec = P.PROVIDERS.get(name)
    assert spec.name in KNOWN_PROVIDERS
    assert all(word in EP_CONSTRAINTS for word in spec.requirements)
    opts = spec.provider_options(threads=3, cache_dir="/tmp/x")
    for key, value in opts.items():
        assert isinstance(value, str)
        option = spec.option(key)
        assert not option.choices or value in option.choices or key in (spec.threads_option, spec.cache_option)
    if spec.threads_option:
        assert opts[spec.threads_option] == "3"
    if spec.cache_option:
        assert opts[spec.cache_option] == "/tmp/x"
    assert spec.to_dict()["name"] == name
    assert P.resolve_provider(spec.alias) == name


def test_documented_options() -> None:
    xnn = P.PROVIDERS.get("XnnpackExecutionProvider")
    assert xnn.session_threads == 1 and xnn.session_config == {"session.intra_op.allow_spinning": "0"}
    assert xnn.provider_options(threads=4) == {"intra_op_num_threads": "4"}
    nnapi = P.PROVIDERS.get("NnapiExecutionProvider").provider_options()
    assert nnapi["NNAPI_FLAG_CPU_DISABLED"] == "1" and nnapi["NNAPI_FLAG_USE_FP16"] == "0"
    coreml = P.PROVIDERS.get("CoreMLExecutionProvider").provider_options(cache_dir="/c")
    assert coreml == {"ModelFormat": "MLProgram", "MLComputeUnits": "ALL", "ModelCacheDirectory": "/c"}
    qnn = P.PROVIDERS.get("QNNExecutionProvider")
    assert qnn.provider_options()["backend_path"].endswith(("libQnnHtp.so", "QnnHtp.dll"))
    assert {"static_shapes", "qdq_only"} <= set(qnn.requirements)
    assert P.PROVIDERS.get("OpenVINOExecutionProvider").provider_options()["device_type"] == "CPU"
    assert qnn.provider_options(overrides={"htp_performance_mode": "balanced"})["htp_performance_mode"] == "balanced"
    with pytest.raises(ConfigError, match="htp_performance_mode='warp'"):
        qnn.provider_options(overrides={"htp_performance_mode": "warp"})
    with pytest.raises(ConfigError, match="has no provider option 'backendpath'"):
        qnn.provider_options(overrides={"backendpath": "x"})


def test_resolve_names() -> None:
    assert P.resolve_provider("XNNPACK") == "XnnpackExecutionProvider"
    assert P.resolve_provider("cpuexecutionprovider") == "CPUExecutionProvider"
    assert P.resolve_provider("rknpu") == "RknpuExecutionProvider"  # known to ORT, passed without options
    with pytest.raises(UnknownNameError, match="Did you mean 'xnnpack'"):
        P.resolve_provider("xnnpak")


def test_plan_orders_device_then_caller_then_cpu() -> None:
    avail = ["QNNExecutionProvider", "XnnpackExecutionProvider", "CPUExecutionProvider"]
    plan = P.plan_providers(
        device_providers=["QNNExecutionProvider", "NnapiExecutionProvider", "CPUExecutionProvider"],
        device_name="phone",
        requested=["xnnpack", "cuda"],
        available=avail,
    )
    assert plan.providers == ("QNNExecutionProvider", "CPUExecutionProvider", "XnnpackExecutionProvider")
    assert [(fb.asked, fb.asked_by) for fb in plan.dropped] == [
        ("NnapiExecutionProvider", "device phone"),
        ("CUDAExecutionProvider", "caller"),
    ]
    assert all(fb.available == tuple(avail) for fb in plan.dropped)
    assert P.plan_providers(available=["CPUExecutionProvider"]).providers == ("CPUExecutionProvider",)
    azure = P.plan_providers(
        requested=["AzureExecutionProvider"], available=["AzureExecutionProvider", "CPUExecutionProvider"]
    )
    assert azure.providers == ("CPUExecutionProvider",) and "remote" in azure.dropped[0].reason


def test_device_fallback_is_reported_once_and_recorded(
    embed_package: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(P, "_REPORTED", set())
    caplog.set_level(logging.WARNING, logger="edgekit.runtimes")
    model = runtimes.load(embed_package, device="pixel-8")  # XNNPACK, NNAPI, CPU
    assert model.providers == ["CPUExecutionProvider"]
    asked = [(fb.asked, fb.asked_by, fb.running) for fb in model.fallbacks]
    assert asked == [
        ("XnnpackExecutionProvider", "device pixel-8", ("CPUExecutionProvider",)),
        ("NnapiExecutionProvider", "device pixel-8", ("CPUExecutionProvider",)),
    ]
    assert model.session.threads == min(get_device("pixel-8").default_threads, physical_cores())
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "XnnpackExecutionProvider (asked by device pixel-8) is not in this onnxruntime build" in warnings[0]
    assert "available: " in warnings[0] and "running: CPUExecutionProvider" in warnings[0]
    runtimes.load(embed_package, device="pixel-8")
    assert len(caplog.records) == 2  # once per process, however often the model is loaded
    info = model.info()
    assert [fb["asked"] for fb in info["fallbacks"]] == ["XnnpackExecutionProvider", "NnapiExecutionProvider"]


def test_provider_that_onnxruntime_does_not_register_falls_back(
    embed_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that claims XNNPACK but cannot create it: the session still loads, on CPU, with the record."""
    monkeypatch.setattr(P, "available_providers", lambda: ["XnnpackExecutionProvider", "CPUExecutionProvider"])
    model = runtimes.load(embed_package, providers=["xnnpack"], threads=2)
    assert model.providers == ["CPUExecutionProvider"]
    (fb,) = model.fallbacks
    assert fb.asked == "XnnpackExecutionProvider" and fb.asked_by == "caller" and "not registered" in fb.reason
    # The XNNPACK entry's session settings were applied: ORT's own pool at one thread.
    assert model.session.session.get_session_options().intra_op_num_threads == 1
    assert (
        model.session.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    )


def test_provider_options_for_a_provider_not_in_use(embed_package: Path) -> None:
    with pytest.raises(ConfigError, match="not among the providers in use"):
        runtimes.load(embed_package, provider_options={"QNNExecutionProvider": {"htp_performance_mode": "burst"}})


def test_node_assignment_shares(lm_package: Path) -> None:
    model = runtimes.load(lm_package, threads=1)
    shares = model.node_assignment
    assert list(shares) == ["CPUExecutionProvider"]
    assert shares["CPUExecutionProvider"]["share"] == 1.0 and shares["CPUExecutionProvider"]["nodes"] > 10
    assert P.node_shares({"A": 3, "B": 1}) == {"A": {"nodes": 3, "share": 0.75}, "B": {"nodes": 1, "share": 0.25}}
