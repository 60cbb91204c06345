"""Notebooks stay thin and clean: short code cells, one `parameters` cell, no stored outputs."""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
MAX_CODE_LINES = 15  # comments and blank lines not counted: narrative belongs in markdown


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]


def code_lines(cell: dict) -> int:
    lines = "".join(cell["source"]).splitlines()
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def test_there_are_notebooks_to_check():
    assert len(NOTEBOOKS) >= 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_code_cells_are_short(path):
    long = {c.get("id"): code_lines(c) for c in code_cells(path) if code_lines(c) > MAX_CODE_LINES}
    assert not long, f"cells over {MAX_CODE_LINES} lines of code: {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_exactly_one_parameters_cell(path):
    tagged = [c for c in code_cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, [c.get("id") for c in tagged]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_without_outputs(path):
    dirty = [c.get("id") for c in code_cells(path) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"strip them: nbstripout {path.name} (cells {dirty})"


def test_code_lines_leave_out_comments_and_blank_lines():
    cell = {"source": ["# a note\n", "\n", "x = 1  # counted\n", "    # indented note\n", "y = 2"]}
    assert code_lines(cell) == 2


SECRET_BEARERS = ("redis_url", "kafka_options", "kafka_config(")  # a URL's password, SASL options


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_cell_shows_a_secret(path):
    """Outputs and HTML exports keep what a cell shows: the lab's address only through
    `redacted_url`, and never the settings object itself (its repr carries the password)."""
    shown = []
    for cell in code_cells(path):
        lines = [line.strip() for line in "".join(cell["source"]).splitlines() if line.strip()]
        shown += [line for line in lines if any(s in line for s in SECRET_BEARERS) and "redacted_url(" not in line]
        if lines and lines[-1] in ("settings", "lab.settings", "print(settings)", "display(settings)"):
            shown.append(lines[-1])
    assert not shown, shown


def unshown_tables(source: str) -> list[int]:
    """Lines of `widgets.table(...)` statements that are not a cell's last statement: Jupyter
    shows only the last expression's value, so such a table never appears."""
    tree = ast.parse("async def cell():\n" + textwrap.indent(source, "    "))  # top-level await is fine
    body = tree.body[0].body
    return [node.lineno - 1 for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func) == "widgets.table" and node is not body[-1]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_table_is_shown(path):
    hidden = {c.get("id"): lines for c in code_cells(path) if (lines := unshown_tables("".join(c["source"])))}
    assert not hidden, f"display(widgets.table(...)) unless it is the cell's last statement: {hidden}"


def test_a_table_before_other_statements_counts_as_unshown():
    assert unshown_tables("widgets.table(rows)\nassert rows") == [1]
    assert unshown_tables("x = 1\nwidgets.table(rows)") == []
    assert unshown_tables("display(widgets.table(rows))\nassert rows") == []
