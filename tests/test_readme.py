"""README.md as an executable document: every ``bash`` and ``python`` block runs, as written and in order.

- The demo's ``out/`` is built once per source state (``python -m edgekit.demo --no-profile``, cached under the
  toy-model cache, keyed by the demo's and the exporters' sources and the library versions) and copied into a
  fresh folder per session; blocks run there, so ``out/...`` paths are the README's own.
- ``bash``: the block through ``bash -e``, with ``edgekit`` on PATH resolving to this checkout's CLI.
- ``python``: exec'd in order in one subprocess with this checkout first on ``sys.path`` (blocks share names,
  as a reader's session does).
- ``bash serve``: each line starts a server (``--port 0`` appended: 8080 may be taken on a shared host), the
  test waits for ``/health`` and checks ``GET /v1/models`` lists the ids the command gives; later blocks' URLs
  ``127.0.0.1:8080`` point at the first one. Servers stop at the end of the session.
- ``bash no-run``: not run; only installs and commands that never return may be fenced so.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
FENCE = re.compile(r"^```(\S*)(.*)$")
RUNNABLE = {("bash", ""), ("bash", "serve"), ("bash", "no-run"), ("python", "")}
# What a no-run block may hold: installs, the make targets, and servers (which never return).
NO_RUN_ALLOWED = re.compile(r"^(make |pip install |edgekit serve )")
BLOCK_TIMEOUT_S = 900


@dataclass(frozen=True)
class Block:
    lang: str
    tag: str
    code: str
    line: int  # 1-based line of the opening fence

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang}" + (f"-{self.tag}" if self.tag else "")


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block with an info string, in order."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group(1):
            start, body = i, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(Block(m.group(1), m.group(2).strip(), "\n".join(body) + "\n", start + 1))
        i += 1
    return blocks


BLOCKS = [b for b in readme_blocks(README.read_text()) if b.lang in ("bash", "python", "sh", "shell", "console")]


def test_every_shell_and_python_block_has_a_known_fence() -> None:
    """A typo in a fence (``bash norun``) must not silently skip a block."""
    unknown = [(b.id, f"{b.lang} {b.tag}") for b in BLOCKS if (b.lang, b.tag) not in RUNNABLE]
    assert not unknown, f"README blocks with fences the README test does not know: {unknown}"
    assert sum(b.tag == "" for b in BLOCKS) >= 8  # the document is mostly run, not skipped


# ----------------------------------------------------------------------------------------- the demo's out/


def _demo_key() -> str:
    import onnxruntime
    import torch
    import transformers

    h = hashlib.sha256()
    files = [REPO / "edgekit" / "demo.py", *sorted((REPO / "exporters").glob("*.py"))]
    files += [REPO / "edgekit" / n for n in ("manifest.py", "package.py", "tasks.py")]
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    h.update(f"{torch.__version__} {transformers.__version__} {onnxruntime.__version__}".encode())
    return h.hexdigest()[:16]


def _cache_root() -> Path:
    env = os.environ.get("EDGEKIT_TEST_CACHE")
    return Path(env) if env else REPO / ".cache" / "toy_models"


def _build_demo(final: Path) -> None:
    partial = final.with_name(final.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    env = {**os.environ, "EDGEKIT_DEMO_DIR": str(partial), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit.demo", "--no-profile"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, f"make demo failed:\n{proc.stdout}\n{proc.stderr}"
    # Quiet: stderr holds only the demo's progress and edgekit's own lines, nothing from third-party code.
    foreign = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith(("[demo ", "    ", "[edgekit] "))]
    assert not foreign, f"make demo printed lines edgekit did not write: {foreign[:5]}"
    for heading in ("all-MiniLM-L6-v2 (", "demo LM: a ", "digits CNN on ", "colour classifier (cls"):
        assert heading in proc.stdout, proc.stdout
    os.replace(partial, final)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the demo's out/ and a bin/edgekit shim calling this checkout's CLI."""
    cached = _cache_root() / f"readme-demo-{_demo_key()}"
    if not cached.is_dir():
        cached.parent.mkdir(parents=True, exist_ok=True)
        _build_demo(cached)
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(cached, work / "out", symlinks=True)
    shim = work / "bin" / "edgekit"
    shim.parent.mkdir()
    # Guarded like the console script pip writes: `edgekit tune` starts spawn workers, which import __main__.
    shim.write_text(
        f"#!{sys.executable}\nimport sys\nfrom edgekit.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n"
    )
    shim.chmod(0o755)
    return work


def _env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{work / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def test_demo_lm_adds_as_measured(workdir: Path) -> None:
    """The trainer's batched teacher-forced exact match equals real greedy decoding (PyTorch and the fp32 package),
    on held-out problems the model never trained on."""
    import random

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    import runtimes
    from exporters.demo_models import EOS_ID, _addition_batch, _exact_match, addition_pairs, addition_prompt

    src = workdir / "out" / "sources" / "tiny-llama"
    model = LlamaForCausalLM.from_pretrained(src).eval()
    tok = AutoTokenizer.from_pretrained(src)
    _, held = addition_pairs()
    problems = random.Random(5).sample(held, 30)
    batched = _exact_match(model, *_addition_batch(problems))
    right = 0
    for a, b in problems:
        ids = tok(addition_prompt(a, b), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=EOS_ID, pad_token_id=0)
        right += tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True) == str(a + b)
    assert batched == right / len(problems)
    assert batched >= 0.9  # trained to 95% on another held-out sample
    pkg = runtimes.load(workdir / "out" / "llm-fp32")
    onnx_right = sum(
        pkg.generate(addition_prompt(a, b), max_tokens=5, temperature=0).text == str(a + b) for a, b in problems
    )
    assert abs(onnx_right - right) <= 2  # fp32 ONNX vs PyTorch: an argmax tie may flip a problem or two


# ----------------------------------------------------------------------------------------- servers


@dataclass
class Session:
    work: Path
    servers: list[subprocess.Popen[bytes]]
    base_url: str | None = None
    python: PythonDriver | None = None

    def rewrite(self, code: str) -> str:
        """The first served URL in place of the README's 8080."""
        return code.replace("127.0.0.1:8080", self.base_url.removeprefix("http://")) if self.base_url else code


def _expected_ids(argv: list[str]) -> list[str]:
    ids = []
    for arg in argv[2:]:
        if arg.startswith("-"):
            break
        name, sep, path = arg.partition("=")
        ids.append(name if sep else Path(arg).name)
    return ids


def _start_server(session: Session, line: str) -> str:
    argv = shlex.split(line, comments=True)
    assert argv[:2] == ["edgekit", "serve"], line
    log = session.work / f"serve-{len(session.servers)}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [str(session.work / "bin" / "edgekit"), *argv[1:], "--port", "0"],
            cwd=session.work,
            env=_env(session.work),
            stdout=err,
            stderr=err,
        )
    session.servers.append(proc)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        m = re.search(r" on (http://[\w.:\[\]]+)", log.read_text(errors="replace"))
        if m:
            url = m.group(1)
            with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
                assert r.status == 200
            with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as r:
                ids = sorted(m["id"] for m in json.load(r)["data"])
            assert ids == sorted(_expected_ids(argv)), (line, ids)
            return url
        assert proc.poll() is None, f"{line} exited:\n{log.read_text(errors='replace')}"
        time.sleep(0.2)
    raise AssertionError(f"{line}: not ready in 180 s:\n{log.read_text(errors='replace')}")


# ----------------------------------------------------------------------------------------- python blocks

_DRIVER = r"""
import json, sys, traceback
ns = {"__name__": "__main__"}
for raw in sys.stdin:
    block = json.loads(raw)
    try:
        exec(compile(block["code"], block["name"], "exec"), ns)
        status = "ok"
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        status = "failed"
    sys.stdout.flush()
    print("\n@@readme-block " + status, flush=True)
"""


class PythonDriver:
    """One interpreter for every python block, fed over stdin; its output is read back line by line."""

    def __init__(self, work: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", _DRIVER],
            cwd=work,
            env=_env(work),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, code: str, name: str) -> tuple[str, str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"code": code, "name": name}) + "\n")
        self.proc.stdin.flush()
        out: list[str] = []
        deadline = time.monotonic() + BLOCK_TIMEOUT_S
        while True:
            line = self.lines.get(timeout=max(1.0, deadline - time.monotonic()))
            if line is None:
                return "died", "".join(out)
            if line.startswith("@@readme-block "):
                return line.split()[1], "".join(out)
            out.append(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def session(workdir: Path) -> Iterator[Session]:
    s = Session(work=workdir, servers=[])
    yield s
    if s.python is not None:
        s.python.close()
    for proc in s.servers:
        proc.terminate()
    for proc in s.servers:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


# ----------------------------------------------------------------------------------------- the blocks


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, session: Session) -> None:
    if block.tag == "no-run":
        commands = [ln for ln in block.code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        commands = [ln for ln in commands if not ln.startswith(" ")]  # continuation lines belong to the one above
        bad = [ln for ln in commands if not NO_RUN_ALLOWED.match(ln)]
        assert not bad, f"README line {block.line}: only installs and servers may be no-run; runnable: {bad}"
        return
    if block.tag == "serve":
        for line in block.code.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                url = _start_server(session, line)
                session.base_url = session.base_url or url
        return
    code = session.rewrite(block.code)
    if block.lang == "python":
        session.python = session.python or PythonDriver(session.work)
        status, out = session.python.run(code, f"README.md:{block.line}")
        assert status == "ok", f"README python block at line {block.line} {status}:\n{out}"
        return
    script = session.work / f"block-{block.line}.sh"
    script.write_text(code)
    proc = subprocess.run(
        ["bash", "-e", str(script)],
        cwd=session.work,
        env=_env(session.work),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"README bash block at line {block.line}:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"README bash block at line {block.line} printed a traceback:\n{proc.stderr}"
