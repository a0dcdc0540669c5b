"""pyproject.toml's metadata (license, classifiers, authors) and its dependency floors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
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


def _floors() -> dict[str, Version]:
    """Runtime dependency -> its floor (`>=X`) in pyproject.toml."""
    floors = {}
    for spec in _project()["dependencies"]:
        requirement = Requirement(spec)
        (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
        floors[canonicalize_name(requirement.name)] = Version(floor)
    return floors


def _min_pins() -> dict[str, Version]:
    """Package -> its pin in constraints-min.txt."""
    pins = {}
    for line in (ROOT / "constraints-min.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


class TestFloors:
    def test_every_dependency_has_a_floor_pinned_in_constraints_min(self) -> None:
        """constraints-min.txt pins each runtime dependency to exactly its pyproject floor,
        and nothing else, so CI's lowest-versions install tests the floors as declared."""
        assert _min_pins() == _floors()

    def test_the_floors_are_what_the_generated_code_requires(self) -> None:
        """grpcio's floor is the version gateway_pb2_grpc.py checks for, protobuf's the
        gencode version of gateway_pb2.py (regenerating with newer tools must raise them)."""
        floors = _floors()
        generated = ROOT / "gateway" / "_proto" / "transfer_gateway" / "v1"
        grpc_code = (generated / "gateway_pb2_grpc.py").read_text()
        (grpc_version,) = re.findall(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_code)
        assert floors["grpcio"] == Version(grpc_version)
        pb_code = (generated / "gateway_pb2.py").read_text()
        (gencode,) = re.findall(r"# Protobuf Python Version: ([\d.]+)", pb_code)
        assert floors["protobuf"] == Version(gencode)

    def test_no_dependency_goes_unused(self) -> None:
        """Every runtime dependency is imported by the package (aiolimiter was declared and
        never imported)."""
        imports = {
            "grpcio": "grpc",
            "grpcio-health-checking": "grpc_health",
            "grpcio-reflection": "grpc_reflection",
            "grpcio-status": "grpc_status",
            "protobuf": "google.protobuf",
            "googleapis-common-protos": "google.rpc",
            "prometheus-client": "prometheus_client",
        }
        source = "\n".join(p.read_text() for p in (ROOT / "gateway").rglob("*.py"))
        for name in _floors():
            module = imports.get(name, name)
            assert re.search(rf"^\s*(import|from) {re.escape(module)}\b", source, re.M), name
