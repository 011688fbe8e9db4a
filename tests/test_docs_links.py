"""Every link between README.md and docs/ leads somewhere: the file exists and, for `#anchor`,
a heading of that file has that anchor (GitHub's rule: lower case, punctuation dropped, spaces to
hyphens)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    found, code = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            code = not code
        elif not code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def local_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t)]


def test_the_anchor_rule() -> None:
    heading = ROOT / "docs" / "crm.md"
    assert "bitrix24-and-kommo-amocrm-native-connectors" in anchors(heading)
    assert "simulate--serve-a-bridge-on-a-separate-simulated-pbx" in anchors(ROOT / "docs" / "simulator.md")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_link_leads_somewhere(document: Path) -> None:
    broken = []
    for target in local_links(document):
        file, _, anchor = target.partition("#")
        path = (document.parent / file).resolve() if file else document
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(path):
            broken.append(f"{target}: no such heading in {path.relative_to(ROOT)}")
    assert broken == []


def test_the_readme_maps_every_document() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in DOCUMENTS[1:] if f"(docs/{p.name})" not in readme] == []
