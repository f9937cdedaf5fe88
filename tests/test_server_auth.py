"""API keys, model permissions and quotas (401 / 403 / 429 + Retry-After), the keys file, the loopback rule,
and the ``edgekit serve`` key commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import FakeEmbedder, FakeLM, wait_for

from edgekit.cli import main
from edgekit.client import AuthenticationError, Client, PermissionDeniedError, QuotaExceededError
from edgekit.errors import ConfigError
from runtimes.server import ServerConfig, add_key, remove_key, start_server
from runtimes.server import auth as auth_mod
from runtimes.server.auth import KeyRecord, KeysFile, KeyStore, QuotaTracker

# A hash of the right form (its secret is unknown): for tests of the other fields.
WELL_FORMED = "scrypt$16384$8$1$" + "A" * 22 + "$" + "A" * 43


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    return {
        "path": path,
        "all": add_key(path, "all-models", daily_quota=3),
        "emb": add_key(path, "emb-only", models=["emb"]),
        "free": add_key(path, "no-quota"),
    }


@pytest.fixture(scope="module")
def server(keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    config = ServerConfig(port=0, api_keys_file=str(keys["path"]), audit_log=str(audit))
    with start_server({"lm": FakeLM(), "emb": FakeEmbedder()}, config) as handle:
        handle.audit_path = audit
        yield handle


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_missing_or_bad_keys_get_401(server: Any, keys: dict[str, Any]) -> None:
    body = {"model": "emb", "input": "x"}
    r = httpx.post(f"{server.url}/v1/embeddings", json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["type"] == "authentication_error"
    wrong_secret = keys["free"].rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    for bad in (
        _h(wrong_secret),
        _h("ek.nobody.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        _h("sk-123"),
        {"Authorization": f"Basic {keys['free']}"},
        {"Authorization": "Bearer"},
    ):
        r = httpx.post(f"{server.url}/v1/embeddings", json=body, headers=bad)
        assert r.status_code == 401, (bad, r.text)
    # The same message whether the id exists or not.
    msgs = {
        httpx.post(f"{server.url}/v1/embeddings", json=body, headers=_h(k)).json()["error"]["message"]
        for k in (wrong_secret, "ek.nobody.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    }
    assert len(msgs) == 1
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers=_h(keys["free"])).status_code == 200
    assert httpx.get(f"{server.url}/health").status_code == 200  # probes need no key


def test_key_limited_to_some_models(server: Any, keys: dict[str, Any]) -> None:
    h = _h(keys["emb"])
    assert httpx.post(f"{server.url}/v1/embeddings", json={"model": "emb", "input": "x"}, headers=h).status_code == 200
    r = httpx.post(f"{server.url}/v1/generate", json={"model": "lm", "prompt": "x"}, headers=h)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert r.json()["error"]["type"] == "permission_error" and "emb" in r.json()["error"]["hint"]
    assert [m["id"] for m in httpx.get(f"{server.url}/v1/models", headers=h).json()["data"]] == ["emb"]
    r = httpx.post(f"{server.url}/v1/generate", json={"model": "nope", "prompt": "x"}, headers=h)
    assert r.status_code == 404 and "lm" not in r.json()["error"]["message"]  # other keys' models stay unnamed
    # Without a model name the key's only model is the default; it serves no generation.
    r = httpx.post(f"{server.url}/v1/generate", json={"prompt": "x"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_task_mismatch"


def test_daily_quota_gives_429_with_retry_after(server: Any, keys: dict[str, Any]) -> None:
    h = _h(keys["all"])
    bad = httpx.post(f"{server.url}/v1/generate", json={"model": "lm", "prompt": "x", "max_tokens": 0}, headers=h)
    assert bad.status_code == 400  # refused before the quota: does not count
    for _ in range(3):
        r = httpx.post(f"{server.url}/v1/generate", json={"model": "lm", "prompt": "x", "max_tokens": 2}, headers=h)
        assert r.status_code == 200, r.text
    r = httpx.post(f"{server.url}/v1/generate", json={"model": "lm", "prompt": "x", "max_tokens": 2}, headers=h)
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["retry-after"]) <= 86401
    # Another key is not affected.
    assert (
        httpx.post(
            f"{server.url}/v1/generate", json={"model": "lm", "prompt": "x", "max_tokens": 2}, headers=_h(keys["free"])
        ).status_code
        == 200
    )

    def lines() -> list[dict[str, Any]]:
        return [json.loads(x) for x in server.audit_path.read_text().splitlines()]

    # The audit line is written once the response is sent, so it may trail the client by a moment.
    wait_for(lambda: {"all-models", "no-quota", "emb-only"} <= {x["key_id"] for x in lines()}, what="audit lines")
    lines = lines()
    assert any(x["status"] == 429 and x["key_id"] == "all-models" for x in lines)


def test_client_maps_auth_errors(server: Any, keys: dict[str, Any]) -> None:
    with pytest.raises(AuthenticationError):
        Client(server.url).embeddings("x", model="emb")
    with pytest.raises(PermissionDeniedError):
        Client(server.url, api_key=keys["emb"]).generate("x", model="lm")
    quota_key = add_key(keys["path"], "tiny-quota", daily_quota=1)
    # The running server read the file at start; a fresh one sees the new key.
    config = ServerConfig(port=0, api_keys_file=str(keys["path"]))
    with start_server({"lm": FakeLM()}, config) as s:
        api = Client(s.url, api_key=quota_key)
        api.generate("x", max_tokens=1)
        with pytest.raises(QuotaExceededError) as exc:
            api.generate("x", max_tokens=1)
    assert exc.value.retry_after >= 1 and exc.value.http_status == 429


def test_keys_file_stores_only_salted_hashes(keys: dict[str, Any]) -> None:
    path: Path = keys["path"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    data = json.loads(text)
    assert data["schema_version"] == "1.0"
    records = {r["id"]: r for r in data["keys"]}
    assert records["all-models"]["daily_quota"] == 3 and records["emb-only"]["models"] == ["emb"]
    for key in (keys["all"], keys["emb"], keys["free"]):
        assert key.startswith("ek.") and key.split(".", 2)[2] not in text
    hashes = [r["hash"] for r in data["keys"]]
    assert all(h.startswith("scrypt$16384$8$1$") for h in hashes) and len({h.split("$")[4] for h in hashes}) == len(
        hashes
    )


def test_verified_keys_are_hashed_once(keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore.load(keys["path"])
    calls = []
    real = auth_mod._scrypt
    monkeypatch.setattr(auth_mod, "_scrypt", lambda *a: calls.append(1) or real(*a))
    assert store.cached(keys["free"]) is None  # first time: needs hashing
    assert store.verify(keys["free"]).id == "no-quota"
    assert store.cached(keys["free"]).id == "no-quota" and len(calls) == 1
    bad = keys["free"][:-4] + "AAAA"
    with pytest.raises(AuthenticationError):
        store.verify(bad)
    with pytest.raises(AuthenticationError):
        store.cached(bad)  # remembered as bad: no second scrypt
    with pytest.raises(AuthenticationError):
        store.cached("ek.unknown-id.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")  # unknown id: no scrypt at all
    assert len(calls) == 2


def test_pbkdf2_records_verify() -> None:
    token = "ek.legacy.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
    record = KeyRecord(id="legacy", hash=auth_mod._pbkdf2_hash(token, iterations=1000))
    store = KeyStore(KeysFile(keys=(record,)))
    assert store.verify(token).id == "legacy"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"keys": [{"id": "a", "hash": WELL_FORMED, "modles": ["*"]}]}, "did you mean 'models'"),
        ({"keys": [{"id": "a", "hash": "md5$x"}]}, "stored hash"),
        ({"keys": [{"id": "a b", "hash": WELL_FORMED}]}, "key id"),
        ({"keys": [{"id": "a", "hash": WELL_FORMED, "daily_quota": 0}]}, "daily_quota"),
        (
            {"keys": [{"id": "a", "hash": WELL_FORMED}, {"id": "a", "hash": WELL_FORMED}]},
            "more than once",
        ),
        ({"kees": []}, "keys"),
    ],
)
def test_keys_file_is_validated(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=f"(?i){match}"):
        KeysFile.from_dict(data)


def test_quota_resets_each_utc_day() -> None:
    now = [86400 * 100 + 10.0]
    quota = QuotaTracker(clock=lambda: now[0])
    record = KeyRecord(id="k", hash=WELL_FORMED, daily_quota=1)
    quota.take(record)
    with pytest.raises(QuotaExceededError) as exc:
        quota.take(record)
    assert exc.value.retry_after == 86400 - 10 + 1
    now[0] += 86400
    quota.take(record)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.9", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_keys(host: str) -> None:
    assert ServerConfig(host=host).host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.com"])
def test_other_hosts_need_keys_or_insecure(host: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refusing"):
        ServerConfig(host=host)
    assert ServerConfig(host=host, insecure=True).insecure
    assert ServerConfig(host=host, api_keys_file=str(tmp_path / "keys.json")).auth_enabled


def test_server_config_rejects_unknown_and_bad_fields() -> None:
    with pytest.raises(ConfigError, match="(?i)did you mean 'queue'"):
        ServerConfig.from_dict({"queu": 3})
    with pytest.raises(ConfigError, match="max_concurrency"):
        ServerConfig.from_dict({"max_concurrency": 0})
    with pytest.raises(ConfigError, match="timeout_s"):
        ServerConfig.from_dict({"timeout_s": float("nan")})
    cfg = ServerConfig.from_dict({"port": 0, "queue": 2})
    assert ServerConfig.from_dict(cfg.to_dict()) == cfg


# ------------------------------------------------------------------------------------------ CLI


def test_cli_add_and_remove_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    assert (
        main(
            [
                "serve",
                "--api-keys",
                str(path),
                "--add-key",
                "phone",
                "--allow-model",
                "emb",
                "--daily-quota",
                "5",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    key = report["result"]["key"]
    assert report["status"] == "ok" and key.startswith("ek.phone.")
    record = KeysFile.read(path).keys[0]
    assert record.models == ("emb",) and record.daily_quota == 5
    assert KeyStore.load(path).verify(key).id == "phone"
    assert main(["serve", "--api-keys", str(path), "--add-key", "phone"]) == 1  # no silent overwrite
    assert "already has a key" in capsys.readouterr().err
    assert main(["serve", "--api-keys", str(path), "--remove-key", "phone"]) == 0
    assert KeysFile.read(path).keys == ()
    remove_key_missing = main(["serve", "--api-keys", str(path), "--remove-key", "phone"])
    assert remove_key_missing == 2 and "unknown key id" in capsys.readouterr().err
    assert main(["serve", "--add-key", "x"]) == 2  # needs --api-keys


def test_cli_refuses_public_bind_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    # Refused before any package is read.
    assert main(["serve", "does-not-matter", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "error[invalid_config]" in err and "refusing" in err and "--add-key" in err
    assert main(["serve"]) == 2
    assert "give the model packages" in capsys.readouterr().err


def test_remove_key_helper(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    add_key(path, "a")
    add_key(path, "b")
    remove_key(path, "a")
    assert [r.id for r in KeysFile.read(path).keys] == ["b"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # atomic writes leave nothing behind
