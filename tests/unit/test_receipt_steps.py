"""The receipt steps are defined once (app/receipts/steps.py): the docs' table is generated from
the definitions, and every step the code writes is one of them."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from app.receipts.steps import STEPS, StepType, table

ROOT = Path(__file__).resolve().parents[2]


def docs_table() -> str:
    text = (ROOT / "docs" / "receipts.md").read_text()
    section = text[text.index("## What is recorded") :]
    start = section.index("| Step | When |")
    return section[start : section.index("\n\n", start) + 1]


def written_step_types() -> set[str]:
    """The literal step types of every ``.step("...", ...)`` call in app/."""
    found: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "step"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(node.args[0].value)
    return found


def test_the_docs_table_is_generated_from_the_definitions() -> None:
    assert docs_table() == table(), "regenerate it: python -m app.receipts.steps"


def test_every_step_written_is_defined_and_every_definition_is_written() -> None:
    written = written_step_types() | {"request"}  # the tracer's begin() writes the request step
    assert written == set(STEPS) == set(get_args(StepType))


def test_a_new_field_shows_in_the_table() -> None:
    assert "`first_piece_ms`?" in table()
    assert "`output_sha256`?" in table()
