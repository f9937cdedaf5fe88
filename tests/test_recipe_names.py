"""The CLI lists tasks and recipes from the registries, not from its own lists."""

from __future__ import annotations

from edgekit.cli import build_parser
from edgekit.recipe_names import recipe_names
from edgekit.tasks import TASKS


def test_core_recipe_names_match_the_exporters_registry() -> None:
    from exporters.recipes import RECIPES

    assert recipe_names() == RECIPES.names() == ["fp32", "fp16", "int8-dynamic", "int8-static", "int4"]
    assert [RECIPES.get(n).description for n in recipe_names()][0] == "graph-optimized float32"


def test_export_help_lists_every_registered_task_and_recipe() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    export = sub.choices["export"]
    helps = {a.dest: a.help for a in export._actions}
    assert helps["recipe"] == "one of: " + ", ".join(recipe_names())
    assert helps["task"].endswith("or one of: " + ", ".join(TASKS.names()))
    assert "tensor" in TASKS.names()
