"""Which ``pip install 'edgekit[EXTRA]'`` brings an optional module, and the CLI's translation of a missing one.

The core install (onnxruntime, numpy, tokenizers) is what goes on a device. Every other module edgekit imports
belongs to an extra declared in pyproject.toml. A ``ModuleNotFoundError`` for one of them that reaches the CLI
becomes a :class:`~edgekit.errors.MissingDependencyError` naming the extra, never a traceback; a module not
registered here is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import MissingDependencyError
from edgekit.registry import Registry

__all__ = ["EXTRAS", "OptionalModule", "extra_for", "missing_dependency"]


@dataclass(frozen=True, kw_only=True)
class OptionalModule:
    """A top-level module from an extra; ``by_command`` overrides the extra where a lighter one is enough."""

    module: str
    extra: str
    by_command: tuple[tuple[str, str], ...] = ()


EXTRAS: Registry[OptionalModule] = Registry("optional module")

for _entry in (
    # onnx reads graphs for the profiler's static analysis and calibration: the `profile` extra is onnx alone.
    OptionalModule(module="onnx", extra="export", by_command=(("profile", "profile"), ("inspect", "profile"))),
    OptionalModule(module="torch", extra="export"),
    OptionalModule(module="transformers", extra="export"),
    OptionalModule(module="optimum", extra="export"),
    OptionalModule(module="onnx_ir", extra="export"),
    OptionalModule(module="onnxscript", extra="export"),
    OptionalModule(module="PIL", extra="vision"),
    OptionalModule(module="fastapi", extra="serve"),
    OptionalModule(module="uvicorn", extra="serve"),
    OptionalModule(module="jinja2", extra="serve"),
):
    EXTRAS.add(_entry.module, _entry)


def extra_for(module: str, command: str | None = None) -> str | None:
    """The extra that installs ``module`` (a dotted name's top level), or None if it is not optional."""
    top = module.split(".")[0]
    if top not in EXTRAS:
        return None
    entry = EXTRAS.get(top)
    return dict(entry.by_command).get(command or "", entry.extra)


def missing_dependency(exc: ModuleNotFoundError, command: str | None = None) -> MissingDependencyError | None:
    """The error to show for ``exc``, or None when the missing module is not from an extra (a real bug)."""
    name = exc.name or ""
    extra = extra_for(name, command)
    if extra is None:
        return None
    err = MissingDependencyError.for_extra(name.split(".")[0], extra)
    err.__cause__ = exc
    return err
