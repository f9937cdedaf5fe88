"""API keys: a keys file that stores them hashed, Bearer authentication, per-key models and daily quotas.

The keys file is JSON (the standard library can write it; TOML it can only read), mode 0600::

    {
      "schema_version": "1.0",
      "keys": [
        {
          "id": "phone-app",                       # [A-Za-z0-9_-]{1,64}; appears in the audit log
          "hash": "scrypt$16384$8$1$<salt>$<digest>",  # base64url salt (16 bytes) and digest (32 bytes)
          "models": ["*"],                         # model ids this key may use; "*" is every model
          "daily_quota": 10000,                    # requests per UTC day; null is unlimited
          "created_at": "2025-01-01T00:00:00+00:00"
        }
      ]
    }

A key is ``ek.<id>.<secret>`` with 256 random bits of secret (``secrets.token_urlsafe(32)``); it is shown
once, by :func:`add_key` / ``edgekit serve --api-keys FILE --add-key ID``, and only its hash is stored. The id
in the key lets the server find the one record to check, so an unknown key costs no hashing at all.

Hashing: scrypt (memory-hard, salted) by default; ``pbkdf2_sha256$<iterations>$<salt>$<digest>`` is also
read, for keys files written by tools without scrypt. A verified key is remembered (by its sha256, in memory
only) so scrypt runs once per key per process, not per request; failed keys are remembered too, in a bounded
set, and at most one scrypt runs at a time, so a flood of bad keys cannot take the CPU from the models.

Quotas count the requests a key makes to the model endpoints (``/v1/generate``, completions, chat,
embeddings, classify) that the server accepts: the charge is taken when the model work starts and given back
by the error handler when the request is then refused (400 from the model, such as a prompt too long for its
context; 503 because the server was busy). Requests refused before (401, 403, 400 validation) never count.
The counts live in memory and restart from zero with the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgekit.errors import AuthenticationError, ConfigError, OutputExistsError, QuotaExceededError, UnknownNameError
from edgekit.registry import Registry, unknown_message

KEYS_SCHEMA_VERSION = "1.0"
KEY_PREFIX = "ek"
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")
_NEGATIVE_CACHE = 4096


# ------------------------------------------------------------------------------------------- hashing


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, kw_only=True)
class HashScheme:
    """One way to store a key: ``hash(secret) -> stored``, ``verify(secret, stored) -> bool``, and ``check(stored)``
    which raises ``ValueError`` saying what is wrong with a stored hash, so a keys file is refused when the server
    starts rather than failing each request made with that key."""

    name: str
    hash: Callable[[str], str]
    verify: Callable[[str, str], bool]
    check: Callable[[str], None]


_B64_RE = re.compile(r"[A-Za-z0-9_-]+")


def _check_b64(text: str, what: str, size: int | None) -> None:
    if not _B64_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError(f"the {what} is not base64url")
    if size is not None and len(_unb64(text)) != size:
        raise ValueError(f"the {what} is {len(_unb64(text))} bytes, not {size}")


def _check_int(text: str, what: str, low: int, high: int) -> int:
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high} (got {text[:20]!r})")
    return int(text)


_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1  # OWASP's minimum for scrypt: 16 MiB, ~50 ms per hash
_SCRYPT_MAXMEM = 256 * 1024 * 1024  # a keys file may ask for stronger parameters, up to this much memory


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=_SCRYPT_MAXMEM + (1 << 20))


def _scrypt_hash(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _scrypt_check(stored: str) -> None:
    _, n, r, p, salt, digest = stored.split("$")
    cost = _check_int(n, "scrypt's N", 2, 2**20)
    if cost & (cost - 1):
        raise ValueError(f"scrypt's N must be a power of 2 (got {cost})")
    block = _check_int(r, "scrypt's r", 1, 64)
    _check_int(p, "scrypt's p", 1, 16)
    if 128 * block * cost > _SCRYPT_MAXMEM:
        raise ValueError(f"scrypt's N and r need {128 * block * cost >> 20} MiB, more than {_SCRYPT_MAXMEM >> 20}")
    _check_b64(salt, "salt", None)
    _check_b64(digest, "digest", 32)


def _scrypt_verify(secret: str, stored: str) -> bool:
    _, n, r, p, salt, digest = stored.split("$")
    return hmac.compare_digest(_scrypt(secret, _unb64(salt), int(n), int(r), int(p)), _unb64(digest))


def _pbkdf2_hash(secret: str, iterations: int = 600_000) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"


def _pbkdf2_check(stored: str) -> None:
    _, iterations, salt, digest = stored.split("$")
    _check_int(iterations, "pbkdf2's iterations", 1, 10_000_000)
    _check_b64(salt, "salt", None)
    _check_b64(digest, "digest", 32)


def _pbkdf2_verify(secret: str, stored: str) -> bool:
    _, iterations, salt, digest = stored.split("$")
    return hmac.compare_digest(
        hashlib.pbkdf2_hmac("sha256", secret.encode(), _unb64(salt), int(iterations)), _unb64(digest)
    )


HASH_SCHEMES: Registry[HashScheme] = Registry("key hash scheme")
HASH_SCHEMES.add("scrypt", HashScheme(name="scrypt", hash=_scrypt_hash, verify=_scrypt_verify, check=_scrypt_check))
HASH_SCHEMES.add(
    "pbkdf2_sha256",
    HashScheme(name="pbkdf2_sha256", hash=_pbkdf2_hash, verify=_pbkdf2_verify, check=_pbkdf2_check),
)
_FIELDS_PER_SCHEME = {"scrypt": 6, "pbkdf2_sha256": 4}


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class KeyRecord:
    id: str
    hash: str
    models: tuple[str, ...] = ("*",)
    daily_quota: int | None = None
    created_at: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.fullmatch(self.id):
            raise ConfigError(f"a key id must be 1-64 letters, digits, '-' or '_' (got {self.id!r})", param="id")
        if isinstance(self.models, list):
            object.__setattr__(self, "models", tuple(self.models))
        if not isinstance(self.models, tuple) or not all(isinstance(m, str) and m for m in self.models):
            raise ConfigError(f"key {self.id!r}: models must be a list of model ids or ['*']", param="models")
        if self.daily_quota is not None and (
            isinstance(self.daily_quota, bool) or not isinstance(self.daily_quota, int) or self.daily_quota < 1
        ):
            raise ConfigError(
                f"key {self.id!r}: daily_quota must be a positive integer or null (got {self.daily_quota!r})",
                param="daily_quota",
            )
        if self.created_at is not None and not isinstance(self.created_at, str):
            raise ConfigError(f"key {self.id!r}: created_at must be a date string or null", param="created_at")
        scheme = self.hash.split("$", 1)[0] if isinstance(self.hash, str) else ""
        if scheme not in HASH_SCHEMES or self.hash.count("$") + 1 != _FIELDS_PER_SCHEME[scheme]:
            raise ConfigError(
                f"key {self.id!r}: the stored hash is not one of {', '.join(HASH_SCHEMES.names())}",
                hint="create keys with `edgekit serve --api-keys FILE --add-key ID`",
                param="hash",
            )
        try:
            HASH_SCHEMES.get(scheme).check(self.hash)
        except ValueError as exc:
            raise ConfigError(
                f"key {self.id!r}: the stored {scheme} hash is malformed: {exc}",
                hint="recreate the key with `edgekit serve --api-keys FILE --remove-key ID` then `--add-key ID`",
                param="hash",
            ) from None

    def allows(self, model_id: str) -> bool:
        return "*" in self.models or model_id in self.models

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KeyRecord:
        if not isinstance(d, Mapping):
            raise ConfigError(f"each key in the keys file must be an object (got {type(d).__name__})")
        known = [f.name for f in fields(cls)]
        for k in d:
            if k not in known:
                raise ConfigError(unknown_message("key field", str(k), known), param=str(k))
        if "id" not in d or "hash" not in d:
            raise ConfigError("each key in the keys file needs an 'id' and a 'hash'")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["models"] = list(self.models)
        return d


@dataclass(frozen=True, kw_only=True)
class KeysFile:
    keys: tuple[KeyRecord, ...] = ()
    schema_version: str = KEYS_SCHEMA_VERSION

    @classmethod
    def read(cls, path: str | Path) -> KeysFile:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"the API keys file {p} does not exist",
                hint=f"create it with `edgekit serve --api-keys {p} --add-key my-app`",
                param="api_keys_file",
            )
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"the API keys file {p} is not valid JSON: {exc}", param="api_keys_file") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            exc.message = f"the API keys file {p}: {exc.message}"
            exc.args = (exc.message,)
            exc.hint = exc.hint or f"fix the file, or recreate its keys: `edgekit serve --api-keys {p} --add-key ID`"
            raise

    @classmethod
    def from_dict(cls, d: Any) -> KeysFile:
        if not isinstance(d, Mapping) or not isinstance(d.get("keys"), list):
            raise ConfigError('an API keys file is an object with a "keys" list', param="api_keys_file")
        for k in d:
            if k not in ("schema_version", "keys"):
                raise ConfigError(unknown_message("keys file field", str(k), ["schema_version", "keys"]), param=k)
        version = d.get("schema_version", KEYS_SCHEMA_VERSION)
        if not isinstance(version, str):
            raise ConfigError(f"the keys file's schema_version must be a string like {KEYS_SCHEMA_VERSION!r}")
        if version.split(".")[0] != KEYS_SCHEMA_VERSION.split(".")[0]:
            raise ConfigError(f"the keys file's schema_version {version} is not {KEYS_SCHEMA_VERSION}")
        records = tuple(KeyRecord.from_dict(r) for r in d["keys"])
        ids = [r.id for r in records]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError(f"the keys file has the key id {dupes[0]!r} more than once", param="id")
        return cls(keys=records, schema_version=version)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "keys": [r.to_dict() for r in self.keys]}

    def write(self, path: str | Path) -> None:
        """Atomically, readable by the owner only: the hashes are not secrets, but they need not be public."""
        p = Path(path)
        tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(tmp, p)


def add_key(path: str | Path, key_id: str, *, models: Sequence[str] = ("*",), daily_quota: int | None = None) -> str:
    """Add a key to the keys file (created if missing) and return it; it is not stored anywhere, only its hash."""
    p = Path(path)
    current = KeysFile.read(p) if p.exists() else KeysFile()
    if any(r.id == key_id for r in current.keys):
        raise OutputExistsError(
            f"the keys file {p} already has a key {key_id!r}",
            hint="pick another id, or remove the old key first (--remove-key)",
            param="id",
        )
    # Check the id, models and quota before spending a scrypt on them.
    placeholder = f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(bytes(16))}${_b64(bytes(32))}"
    KeyRecord(id=key_id, hash=placeholder, models=tuple(models), daily_quota=daily_quota)
    token = f"{KEY_PREFIX}.{key_id}.{secrets.token_urlsafe(32)}"
    record = KeyRecord(
        id=key_id,
        hash=HASH_SCHEMES.get("scrypt").hash(token),
        models=tuple(models),
        daily_quota=daily_quota,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    KeysFile(keys=(*current.keys, record), schema_version=current.schema_version).write(p)
    return token


def remove_key(path: str | Path, key_id: str) -> None:
    current = KeysFile.read(path)
    ids = [r.id for r in current.keys]
    if key_id not in ids:
        raise UnknownNameError(unknown_message("key id", key_id, ids), param="id")
    KeysFile(keys=tuple(r for r in current.keys if r.id != key_id), schema_version=current.schema_version).write(path)


# ------------------------------------------------------------------------------------------- checking


def parse_bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError(
            "this server needs an API key: send the header 'Authorization: Bearer <key>'",
            hint="ask the server's operator for a key (`edgekit serve --api-keys FILE --add-key ID` creates one)",
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <key>'")
    return token.strip()


class KeyStore:
    """The keys of one keys file, with a memory of keys already checked so each is hashed once."""

    def __init__(self, keys: KeysFile) -> None:
        self.records = {r.id: r for r in keys.keys}
        self._verified: dict[bytes, str] = {}  # sha256(token) -> key id
        self._rejected: set[bytes] = set()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> KeyStore:
        return cls(KeysFile.read(path))

    def cached(self, token: str) -> KeyRecord | None:
        """The key's record when it was verified before; raises if it is known to be bad; None: needs hashing."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            key_id = self._verified.get(digest)
            if key_id is not None:
                return self.records[key_id]
            if digest in self._rejected:
                raise _invalid()
        record = self._record_for(token)
        if record is None:
            self._remember_bad(digest)
            raise _invalid()
        return None

    def verify(self, token: str) -> KeyRecord:
        """The slow path (scrypt): run it off the event loop."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        record = self._record_for(token)
        if record is None or not HASH_SCHEMES.get(record.hash.split("$", 1)[0]).verify(token, record.hash):
            self._remember_bad(digest)
            raise _invalid()
        with self._lock:
            self._verified[digest] = record.id
        return record

    def _record_for(self, token: str) -> KeyRecord | None:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != KEY_PREFIX or not _SECRET_RE.fullmatch(parts[2]):
            return None
        return self.records.get(parts[1])

    def _remember_bad(self, digest: bytes) -> None:
        with self._lock:
            if len(self._rejected) >= _NEGATIVE_CACHE:
                self._rejected.clear()
            self._rejected.add(digest)


def _invalid() -> AuthenticationError:
    # The same answer for an unknown id and a wrong secret: a caller learns nothing about which ids exist.
    return AuthenticationError("the API key is not valid", hint="check the key; it is shown once when created")


@dataclass
class QuotaTracker:
    """Requests per key per UTC day, in memory."""

    clock: Callable[[], float] = time.time
    _counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # key id -> (day number, count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, record: KeyRecord) -> None:
        if record.daily_quota is None:
            return
        now = self.clock()
        day = int(now // 86400)
        with self._lock:
            seen_day, count = self._counts.get(record.id, (day, 0))
            if seen_day != day:
                count = 0
            if count >= record.daily_quota:
                retry = int((day + 1) * 86400 - now) + 1
                raise QuotaExceededError(
                    f"the API key {record.id!r} has used its {record.daily_quota} requests for today (UTC)",
                    retry_after=retry,
                    hint="the quota resets at midnight UTC; ask the operator for a larger daily_quota",
                )
            self._counts[record.id] = (day, count + 1)

    def refund(self, record: KeyRecord) -> None:
        if record.daily_quota is None:
            return
        with self._lock:
            day, count = self._counts.get(record.id, (0, 0))
            if count:
                self._counts[record.id] = (day, count - 1)

    def used(self, key_id: str) -> int:
        day = int(self.clock() // 86400)
        seen_day, count = self._counts.get(key_id, (day, 0))
        return count if seen_day == day else 0
