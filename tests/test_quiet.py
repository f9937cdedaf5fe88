"""Quiet by default: third-party warnings, log records and prints stay off the terminal unless -v; a core
install (no onnx / torch / transformers) inspects and runs packages, and names the extra when it cannot."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from edgekit import quiet
from edgekit.cli import main
from edgekit.errors import MissingDependencyError
from edgekit.extras import extra_for, missing_dependency

REPO = Path(__file__).resolve().parents[1]


def _chatter() -> None:
    """What torch / optimum / ORT do: a warning from their module, root and library log records, a print."""
    warnings.warn_explicit(
        "Converting a tensor to a Python boolean", UserWarning, "torch/jit/_trace.py", 1, "torch.jit"
    )
    logging.getLogger().warning("Please consider to run pre-processing before quantization.")
    logging.getLogger("optimum.exporters").warning("requires accelerate")
    print("Collecting tensor data and making histogram ...")


def test_third_party_output_is_dropped_without_v(capsys: pytest.CaptureFixture[str]) -> None:
    stdout_before, level_before = sys.stdout, logging.getLogger("optimum").level
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # whatever the process's filters, the scope drops foreign warnings
        with quiet.command_scope(0):
            _chatter()
            logging.getLogger("edgekit.export").warning("kept in float: 2 nodes")
            print("edgekit's own result", file=quiet.stdout())
    captured = capsys.readouterr()
    assert captured.out == "edgekit's own result\n"
    assert captured.err == "[edgekit] WARNING kept in float: 2 nodes\n"
    assert [str(w.message) for w in seen] == []
    # Everything the scope changed is restored.
    assert sys.stdout is stdout_before and logging.getLogger("optimum").level == level_before


def test_v_shows_everything_on_stderr_and_keeps_stdout_clean(capsys: pytest.CaptureFixture[str]) -> None:
    with quiet.command_scope(1), pytest.warns(UserWarning, match="Python boolean"):
        _chatter()
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert "Collecting tensor data" in err
    # The root logger's record is labelled as what it is, not as an edgekit warning.
    assert "[root] WARNING Please consider to run pre-processing" in err
    assert "[edgekit] WARNING Please" not in err


def test_edgekit_warnings_are_not_filtered() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet.third_party_quiet(0):
            warnings.warn_explicit("edgekit's own", UserWarning, "edgekit/x.py", 1, "edgekit.profiler")
            warnings.warn_explicit("foreign", UserWarning, "torch/x.py", 1, "torch.onnx")
    assert [str(w.message) for w in seen] == ["edgekit's own"]


def test_scopes_nest_and_restore() -> None:
    real = sys.stdout
    with quiet.third_party_quiet(0):
        with quiet.third_party_quiet(2):  # the inner scope does not change the policy
            assert quiet.verbosity() == 0 and quiet.stdout() is real
        assert sys.stdout is not real
    assert sys.stdout is real and quiet.stdout() is real


def test_version_names_runtime_python_and_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    from edgekit.devices.host import detect_cpu

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("edgekit ")
    assert f"onnxruntime {ort.__version__}" in lines
    assert any(line.startswith("providers ") and "CPUExecutionProvider" in line for line in lines)
    assert any(line.startswith(f"python {sys.version.split()[0]}") for line in lines)
    cpu = detect_cpu()
    assert f"cpu {cpu.model} ({cpu.arch}, {cpu.cores} cores)" in lines
    assert f"isa {' '.join(cpu.isa_features) or '-'}" in lines


def test_missing_modules_name_their_extra() -> None:
    assert extra_for("onnx", "profile") == "profile" and extra_for("onnx.helper", "export") == "export"
    assert extra_for("torch.nn") == "export" and extra_for("fastapi") == "serve" and extra_for("PIL") == "vision"
    assert extra_for("numpy") is None  # a core module missing is a broken install, not an extra
    err = missing_dependency(ModuleNotFoundError("No module named 'onnx'", name="onnx"), "profile")
    assert isinstance(err, MissingDependencyError) and err.code == "missing_dependency"
    assert err.hint == "install the extra: pip install 'edgekit[profile]'"
    assert missing_dependency(ModuleNotFoundError("x", name="edgekit_typo"), "run") is None


CORE_ONLY = """
import json, sys, contextlib, io
for name in ("onnx", "torch", "transformers", "optimum", "onnx_ir", "onnxscript"):
    sys.modules[name] = None  # import raises ModuleNotFoundError, as on a core install
from edgekit.cli import main
out = {}
for label, argv in json.loads(sys.argv[1]).items():
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    out[label] = {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
print(json.dumps(out))
"""


def test_core_install_inspects_runs_and_names_the_profile_extra(embed_package: Path) -> None:
    pkg = str(embed_package)
    runs = {
        "inspect": ["inspect", pkg, "--json"],
        "inspect_onnx": ["inspect", str(embed_package / "model.onnx"), "--json"],
        "run": ["run", pkg, "--text", "hello device", "--json"],
        "profile": ["profile", pkg, "--device", "host", "--runs", "2", "--json"],
        "quantize": [
            "quantize",
            str(embed_package / "model.onnx"),
            "--recipe",
            "int8-dynamic",
            "-o",
            pkg + "-q",
            "--allow-slower",
        ],
    }
    proc = subprocess.run(
        [sys.executable, "-c", CORE_ONLY, json.dumps(runs)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for label, r in res.items():
        assert "Traceback" not in r["stderr"], (label, r["stderr"])
    inspected = json.loads(res["inspect"]["stdout"])["result"]
    assert res["inspect"]["code"] == 0 and inspected["task"] == "feature-extraction"
    assert inspected["ops"]["Gather"] >= 1 and inspected["opset"] == 18
    assert [t["name"] for t in inspected["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    bare = json.loads(res["inspect_onnx"]["stdout"])["result"]
    assert bare["ops"] == inspected["ops"] and bare["inputs"] == inspected["inputs"]
    assert res["run"]["code"] == 0 and json.loads(res["run"]["stdout"])["result"]["result"]["dim"] == 16
    profile = json.loads(res["profile"]["stdout"])
    assert res["profile"]["code"] == 1 and profile["errors"][0]["code"] == "missing_dependency"
    assert "pip install 'edgekit[profile]'" in res["profile"]["stderr"]
    assert res["quantize"]["code"] == 1 and "pip install 'edgekit[export]'" in res["quantize"]["stderr"]


@pytest.mark.slow
def test_hf_export_is_quiet(minilm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real optimum export (TracerWarnings, torch_dtype deprecation, 'requires accelerate', ORT's
    pre-processing warning) writes nothing but edgekit's own lines without -v."""
    from tests.conftest import make_tiny_bert

    src = make_tiny_bert(tmp_path / "bert", minilm_dir)
    argv = [
        "export",
        str(src),
        "--task",
        "feature-extraction",
        "--recipe",
        "int8-dynamic",
        "-o",
        str(tmp_path / "p"),
        "--allow-slower",
    ]
    assert main([*argv, "--validation-samples", "4", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "ok"
    foreign = [line for line in captured.err.splitlines() if line.strip() and not line.startswith("[edgekit]")]
    assert foreign == []


def test_python_api_is_quiet_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """edgekit.quantize from Python: ORT's entropy calibrator prints nothing, the result is returned."""
    import numpy as np

    import edgekit
    from tests.onnx_builders import mlp_classifier

    model = mlp_classifier(tmp_path / "mlp.onnx")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
    result = edgekit.quantize(
        model,
        output=tmp_path / "q",
        recipe="int8-static",
        calibration=tmp_path / "cal.npz",
        recipe_options={"method": "entropy"},
        progress=False,
        on_slower="off",  # "warn" would warn (on purpose) when the toy is slower than fp32 on this CPU
    )
    assert result.manifest.recipe.options["method"] == "entropy"
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


ORT_CPP_LOG = """
import sys
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from edgekit.quiet import third_party_quiet

# An unused initializer: ONNX Runtime's C++ graph code warns on session creation, to stderr (fd 2).
graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    [numpy_helper.from_array(np.zeros(3, np.float32), "unused")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
model.ir_version = 8
with third_party_quiet(int(sys.argv[1])):
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
"""


@pytest.mark.parametrize("level", [0, 1])
def test_ort_cpp_logs_only_with_v(level: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", ORT_CPP_LOG, str(level)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""
    assert ("Removing initializer 'unused'" in proc.stderr) == (level >= 1), proc.stderr


def test_edgekit_records_survive_the_quiet_root(caplog: pytest.LogCaptureFixture) -> None:
    """Quieting the root logger must not silence edgekit's own loggers, which inherit its level."""
    caplog.set_level(logging.WARNING)
    with quiet.third_party_quiet(0):
        logging.getLogger("edgekit.export").warning("kept in float: 1 node")
        logging.getLogger("onnxruntime.quantization").warning("Please consider to run pre-processing")
        logging.getLogger().warning("root chatter")
    assert [r.getMessage() for r in caplog.records] == ["kept in float: 1 node"]
