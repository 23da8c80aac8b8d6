"""docs/tenant-behaviours.md cannot rot: every row names a source (a URL or "assumed") and a test
that exists, and every Graph/Exchange call a playbook step declares has its row."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from shared.steps import ALL_STEPS

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs" / "tenant-behaviours.md"


def rows() -> list[list[str]]:
    table = [line for line in CATALOGUE.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    header, body = table[0], table[1:]
    assert [c.strip() for c in header.strip("|").split("|")] == ["behaviour", "Microsoft source", "simulator",
                                                                  "product", "test"]
    out = []
    for line in body:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        assert len(cells) == 5, f"a row needs 5 cells: {line[:120]}"
        out.append(cells)
    return out


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_the_catalogue_has_rows():
    assert len(rows()) >= 60


@pytest.mark.parametrize("row", rows(), ids=lambda r: r[0][:60])
def test_every_row_names_a_source_and_an_existing_test(row):
    behaviour, source, simulator, product, test = row
    assert behaviour and simulator and product
    assert "https://" in source or "assumed" in source, f"no Microsoft source and not marked assumed: {source}"
    path, sep, name = test.partition("::")
    assert sep, f"test must be file::name, got {test!r}"
    file = ROOT / path
    assert file.is_file(), f"{path} does not exist"
    assert name in defined_tests(file), f"{path} defines no test {name}"


def test_every_call_a_step_declares_has_a_row():
    behaviours = " ".join(row[0] for row in rows())
    quoted = set(re.findall(r"`([^`]+)`", behaviours))
    missing = [f"{step.name}: {call.what}" for step in ALL_STEPS for call in step.calls if call.what not in quoted]
    assert not missing, "calls with no catalogue row: " + "; ".join(missing)
