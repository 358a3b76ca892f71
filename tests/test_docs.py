"""docs/: every page carries runnable examples, and the test run executes them.

pytest collects docs/*.md as doctests (setup.cfg: testpaths and --doctest-glob), but a page with
no `>>>` example yields no test at all, which would pass unnoticed: hence the count here.
"""

import doctest
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ("formats.md", "interfaces.md", "training-step.md", "walkthrough.md")
# Measured figures and message tables, kept out of the README; they hold no example to run.
PROSE = ("benchmarks.md", "failures.md")
# Each page documents several layouts or commands, each with at least one example.
MIN_EXAMPLES = 10


def test_the_run_collects_docs_as_doctests(pytestconfig):
    assert "docs" in pytestconfig.getini("testpaths")
    assert "*.md" in pytestconfig.getoption("doctestglob")


def test_every_page_is_listed():
    assert sorted(p.name for p in DOCS.glob("*.md")) == sorted(PAGES + PROSE)


@pytest.mark.parametrize("page", PAGES)
def test_page_has_examples(page):
    examples = doctest.DocTestParser().get_examples((DOCS / page).read_text(encoding="utf-8"))
    assert len(examples) >= MIN_EXAMPLES


@pytest.mark.parametrize("page", PROSE)
def test_prose_page_has_no_example_left_unrun(page):
    assert doctest.DocTestParser().get_examples((DOCS / page).read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("page", PAGES + PROSE)
def test_page_refers_only_inside_the_repository(page):
    assert "../shared" not in (DOCS / page).read_text(encoding="utf-8")
