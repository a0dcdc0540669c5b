"""pyproject.toml's metadata: a license with its text, valid classifiers, authors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from trove_classifiers import classifiers as known_classifiers

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


class TestMetadata:
    def test_license_is_declared_and_its_text_ships(self) -> None:
        """An SPDX license expression, and the LICENSE file it names holds that license."""
        project = _project()
        assert project["license"] == "Apache-2.0"
        assert project["license-files"] == ["LICENSE"]
        text = (ROOT / "LICENSE").read_text()
        assert "Apache License" in text
        assert "Version 2.0, January 2004" in text
        assert "END OF TERMS AND CONDITIONS" in text

    def test_classifiers_are_pypi_classifiers(self) -> None:
        """Every classifier is on PyPI's list (a typo would be refused at upload), the Python
        version classifiers agree with requires-python, and no license classifier doubles
        the SPDX expression (PEP 639 forbids both)."""
        project = _project()
        unknown = [c for c in project["classifiers"] if c not in known_classifiers]
        assert unknown == []
        assert project["requires-python"] == ">=3.11"
        assert "Programming Language :: Python :: 3.11" in project["classifiers"]
        assert not [c for c in project["classifiers"] if c.startswith("License ::")]

    def test_authors_are_named(self) -> None:
        """Authors are given by name."""
        assert all(author.get("name") for author in _project()["authors"])
