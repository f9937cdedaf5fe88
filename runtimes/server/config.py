"""The server's typed config: the CLI, a config dict and tests all build it through ``ServerConfig.from_dict``."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from edgekit.errors import ConfigError
from edgekit.registry import unknown_message


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals; any other name may resolve to a public interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080  # 0 picks a free port
    api_keys_file: str | None = None  # None: no auth, which is allowed on loopback only (or with insecure)
    max_concurrency: int = 1  # generations running at once, per model; on a small CPU one at a time is fastest
    queue: int = 64  # requests waiting per model beyond those running; more get 503 + Retry-After
    timeout_s: float = 60.0  # per request, queue wait included
    read_timeout_s: float = 10.0  # for a request's headers, and for its body (within timeout_s): slow clients
    insecure: bool = False  # allow a non-loopback host without API keys
    log_content: bool = False  # prompts and outputs in the audit log: off, they are the user's data
    audit_log: str | None = None  # JSON-lines file, one line per request
    max_body_bytes: int = 1 << 20
    max_tokens_limit: int = 4096  # upper bound for max_tokens, besides each model's context window
    max_batch_inputs: int = 256  # inputs per embeddings / classify request
    shutdown_timeout_s: float = 30.0  # in-flight requests get this long to finish on shutdown

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be a host name or IP address (got {self.host!r})", param="host")
        _int(self.port, "port", 0, 65535)
        for name in ("max_concurrency", "max_body_bytes", "max_tokens_limit", "max_batch_inputs"):
            _int(getattr(self, name), name, 1, None)
        _int(self.queue, "queue", 0, None)
        for name in ("timeout_s", "read_timeout_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds (got {value!r})", param=name)
        for name in ("insecure", "log_content"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false (got {getattr(self, name)!r})", param=name)
        for name in ("api_keys_file", "audit_log"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a file path (got {value!r})", param=name)
        # Without keys, anyone who can reach the port can use the models: only the device itself may.
        if self.api_keys_file is None and not self.insecure and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve on {self.host} without API keys: only loopback (127.0.0.1, ::1, localhost)"
                " may be served without them",
                hint="create keys with `edgekit serve --api-keys keys.json --add-key my-app` and pass"
                " --api-keys keys.json, or pass --insecure if this network is trusted",
                param="host",
            )

    @property
    def auth_enabled(self) -> bool:
        return self.api_keys_file is not None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServerConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(f"a server config must be an object (got {type(d).__name__})")
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                raise ConfigError(unknown_message("server option", str(key), known), param=str(key))
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _int(value: Any, name: str, low: int, high: int | None) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int) and value >= low and (high is None or value <= high)
    if not ok:
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be an integer {bound} (got {value!r})", param=name)
