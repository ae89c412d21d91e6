"""The README stays a ten-minute read whose links all lead somewhere, and the record speaks in dates, not in rounds."""

from __future__ import annotations

import re

import pytest

from helpers.runs import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RELATIVE_TIME = re.compile(r"this round|the default then|last round|previous round|for one commit", re.IGNORECASE)


def test_the_readme_is_at_most_250_lines():
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if line.strip()]
    assert len(lines) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_of_a_page_resolves_to_a_file_in_the_repo(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not in the repo"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_dates_its_record_instead_of_saying_this_round(page):
    assert not RELATIVE_TIME.findall(page.read_text())
