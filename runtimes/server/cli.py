"""``edgekit serve``: options and command body (registered in ``edgekit/commands/serve.py``).

    edgekit serve [ID=]PKG [[ID=]PKG ...] [--name ID ...] [--host 127.0.0.1] [--port 8080] [--api-keys FILE]
                  [--max-concurrency N] [--queue N] [--timeout S] [--read-timeout S] [--insecure]
                  [--log-content] [--audit-log FILE] [--max-body-bytes N] [--max-tokens-limit N]
                  [--device NAME] [--threads N]

A model's id (the ``model`` of a request) is its package folder's name, or the ``ID`` given before ``=``, or
the n-th ``--name`` for the n-th package: ``edgekit serve llm-fp32=out/llm llm-int8=out/llm-int8`` serves two
variants of one model side by side. Two packages with one id are refused.
    edgekit serve --api-keys FILE --add-key ID [--allow-model MODEL ...] [--daily-quota N]
    edgekit serve --api-keys FILE --remove-key ID

Module-level imports are the standard library only: the CLI builds every command's parser at start.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from edgekit.errors import UsageError
from runtimes.server.config import ServerConfig  # standard library and edgekit core only

# One source of truth for the defaults: the typed config.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ServerConfig)}


EXAMPLES = """examples:
  edgekit serve out/llm-int4 out/minilm-int8            # ids: llm-int4, minilm-int8 (the folder names)
  edgekit serve llm-fp32=out/llm llm-int8=out/llm-int8  # two variants of one model side by side
  edgekit serve --api-keys keys.json --add-key phone-app --daily-quota 5000
  edgekit serve out/llm-int4 --host 0.0.0.0 --api-keys keys.json --audit-log audit.jsonl -v
"""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines as written
    parser.add_argument(
        "packages",
        nargs="*",
        metavar="[ID=]PKG",
        help="model packages to serve; a model's id is its folder's name, or ID (e.g. llm-int8=out/llm)",
    )
    parser.add_argument(
        "--name",
        action="append",
        metavar="ID",
        help="the id of the package at the same position (repeat once per package)",
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=_DEFAULTS["host"], help="address to listen on (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=_DEFAULTS["port"], help="port (default 8080; 0 picks a free one)")
    net.add_argument("--api-keys", metavar="FILE", help="keys file: require 'Authorization: Bearer <key>'")
    net.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without --api-keys (trusted networks)"
    )
    load = parser.add_argument_group("load limits")
    load.add_argument(
        "--max-concurrency",
        type=int,
        default=_DEFAULTS["max_concurrency"],
        metavar="N",
        help="requests running at once per model (default 1)",
    )
    load.add_argument(
        "--queue",
        type=int,
        default=_DEFAULTS["queue"],
        metavar="N",
        help="requests waiting per model; beyond it 503 + Retry-After (default 64)",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=_DEFAULTS["timeout_s"],
        metavar="S",
        help="seconds per request, queue wait included (default 60)",
    )
    load.add_argument(
        "--read-timeout",
        type=float,
        default=_DEFAULTS["read_timeout_s"],
        metavar="S",
        help="seconds a client may take to send its headers, and its body (default 10): slow clients get 408",
    )
    load.add_argument(
        "--max-body-bytes",
        type=int,
        default=_DEFAULTS["max_body_bytes"],
        metavar="N",
        help="largest request body; larger ones get 413 (default 1 MiB)",
    )
    load.add_argument(
        "--max-tokens-limit",
        type=int,
        default=_DEFAULTS["max_tokens_limit"],
        metavar="N",
        help="largest max_tokens accepted, besides each model's context window (default 4096)",
    )
    logs = parser.add_argument_group("logging")
    logs.add_argument("--audit-log", metavar="FILE", help="append one JSON line per request")
    logs.add_argument("--log-content", action="store_true", help="include prompts and outputs in the audit log")
    rt = parser.add_argument_group("runtime")
    rt.add_argument("--device", metavar="NAME", help="device profile: execution providers and threads")
    rt.add_argument("--threads", type=int, metavar="N", help="intra-op threads per model")
    keys = parser.add_argument_group("keys (with --api-keys FILE; no server is started)")
    keys.add_argument("--add-key", metavar="ID", help="create a key, print it once, store its hash in FILE")
    keys.add_argument(
        "--allow-model", action="append", metavar="MODEL", help="models the new key may use (default all)"
    )
    keys.add_argument("--daily-quota", type=int, metavar="N", help="requests per UTC day for the new key")
    keys.add_argument("--remove-key", metavar="ID", help="delete a key from FILE")


def serve_command(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.add_key or args.remove_key:
        return _keys_command(args)
    if args.allow_model or args.daily_quota is not None:
        raise UsageError("--allow-model and --daily-quota go with --add-key")
    if not args.packages:
        raise UsageError("give the model packages to serve: edgekit serve [ID=]PKG ...", param="packages")
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "api_keys_file": args.api_keys,
        "max_concurrency": args.max_concurrency,
        "queue": args.queue,
        "timeout_s": args.timeout,
        "read_timeout_s": args.read_timeout,
        "insecure": args.insecure,
        "log_content": args.log_content,
        "audit_log": args.audit_log,
        "max_body_bytes": args.max_body_bytes,
        "max_tokens_limit": args.max_tokens_limit,
    }
    config = ServerConfig.from_dict(options)  # refuses a public host without keys before loading anything
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {args.threads})", param="threads")

    import runtimes
    from runtimes.server.runner import serve_forever

    named = model_paths(args.packages, args.name or [])  # duplicate ids refused before any model loads
    if config.api_keys_file:
        from runtimes.server.auth import KeysFile

        KeysFile.read(config.api_keys_file)  # a malformed keys file is refused before loading models too
    models = {mid: runtimes.load(path, device=args.device, threads=args.threads) for mid, path in named.items()}

    def ready(url: str) -> None:
        auth = (
            "API keys required" if config.auth_enabled else "no auth (loopback)" if not config.insecure else "NO AUTH"
        )
        print(f"edgekit: serving {len(models)} model(s) on {url} ({auth}); Ctrl-C stops", file=sys.stderr, flush=True)

    summary = serve_forever(models, config, on_ready=ready)
    text = f"stopped: served {summary['requests']} requests in {summary['uptime_seconds']:.0f} s"
    return summary, text


def model_paths(packages: list[str], names: list[str]) -> dict[str, str]:
    """``{id: path}`` from ``[ID=]PKG`` arguments and ``--name`` options, refusing duplicate and clashing ids."""
    from pathlib import Path

    from runtimes.server.served import check_model_id, default_model_id

    if names and len(names) != len(packages):
        raise UsageError(
            f"--name was given {len(names)} times for {len(packages)} packages: give one per package, in order",
            hint="or write each id before its package: edgekit serve llm-fp32=out/llm llm-int8=out/llm-int8",
            param="name",
        )
    pairs: list[tuple[str, str]] = []
    for i, arg in enumerate(packages):
        ident, sep, path = arg.partition("=")
        explicit = bool(sep and ident) and not Path(arg).exists()  # a path that holds '=' is a path
        if not explicit:
            ident, path = default_model_id(arg), arg
        if names:
            if explicit:
                raise UsageError(f"{arg!r} has an id and a --name: give one of them", param="name")
            ident = names[i]
        pairs.append((check_model_id(ident), path))
    out: dict[str, str] = {}
    for ident, path in pairs:
        if ident in out:
            raise UsageError(
                f"two packages would be served as {ident!r} ({out[ident]} and {path}): model ids must be unique",
                hint=f"give each its own id: edgekit serve {ident}-a={out[ident]} {ident}-b={path}",
                param="name",
            )
        out[ident] = path
    return out


def _keys_command(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from runtimes.server.auth import add_key, remove_key

    if not args.api_keys:
        raise UsageError("--add-key and --remove-key need --api-keys FILE", param="api_keys_file")
    if args.packages:
        raise UsageError("--add-key / --remove-key manage keys only: give no packages with them")
    if args.remove_key:
        remove_key(args.api_keys, args.remove_key)
        return {"api_keys_file": args.api_keys, "removed": args.remove_key}, f"removed key {args.remove_key!r}"
    models = args.allow_model or ["*"]
    key = add_key(args.api_keys, args.add_key, models=models, daily_quota=args.daily_quota)
    result = {
        "api_keys_file": args.api_keys,
        "id": args.add_key,
        "key": key,
        "models": models,
        "daily_quota": args.daily_quota,
    }
    text = (
        f"added key {args.add_key!r} to {args.api_keys} (models: {', '.join(models)};"
        f" daily quota: {args.daily_quota or 'unlimited'})\n"
        f"{key}\n"
        "store it now: only its hash is kept, it cannot be shown again"
    )
    return result, text
