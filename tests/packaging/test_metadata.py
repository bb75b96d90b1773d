"""What PyPI shows of the four distributions: metadata fields, a LICENSE in every wheel and
sdist, READMEs that read on their own, and dependency floors that the floors environment tests."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["nnterp-core", "nnterp-interventions", "nnterp-display", "nnterp-models-contrib"]
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
URL_LABELS = ["Documentation", "Source", "Issues", "Changelog"]
#: Dependencies the floors environment keeps above their floor, and why.
NOT_AT_FLOOR = {"torch": "torch 2.6 on PyPI is a CUDA build of several GB; the CPU 2.13.0 is on disk"}


def pyproject(path: Path) -> dict:
    return tomllib.loads(path.read_text())


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """An sdist of each distribution, and the wheel built from that sdist (``python -m build``)."""
    out = tmp_path_factory.mktemp("dist")
    for name in PACKAGES:
        result = subprocess.run(
            [sys.executable, "-m", "build", "-q", "--outdir", str(out), str(ROOT / "packages" / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return out


def wheel_metadata(dist: Path, name: str):
    wheel = next(dist.glob(f"{name.replace('-', '_')}-2.0.0-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        license_text = archive.read(next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))).decode()
    return Parser().parsestr(metadata), license_text


@pytest.mark.slow
@pytest.mark.parametrize("name", PACKAGES)
def test_wheel_metadata_has_classifiers_urls_authors_keywords_and_the_license(dist, name):
    metadata, license_text = wheel_metadata(dist, name)
    classifiers = metadata.get_all("Classifier")
    for expected in [
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Typing :: Typed",
        *[f"Programming Language :: Python :: {version}" for version in PYTHONS],
    ]:
        assert expected in classifiers, (name, expected)
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert set(URL_LABELS) <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    assert metadata["Author"] == "nnterp developers"
    assert "interpretability" in metadata["Keywords"].split(",")
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert license_text.startswith("MIT License") and "Copyright (c) 2024-2026 nnterp developers" in license_text
    assert license_text == (ROOT / "LICENSE").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", PACKAGES)
def test_sdist_ships_the_license_and_a_readme_without_relative_links(dist, name):
    sdist = next(dist.glob(f"{name.replace('-', '_')}-2.0.0.tar.gz"))
    with tarfile.open(sdist) as archive:
        members = {member.name.split("/", 1)[1]: member for member in archive.getmembers() if "/" in member.name}
        assert "LICENSE" in members
        license_text = archive.extractfile(members["LICENSE"]).read().decode()
        readme = archive.extractfile(members["README.md"]).read().decode()
    assert license_text == (ROOT / "LICENSE").read_text()
    metadata, _ = wheel_metadata(dist, name)
    description = metadata.get_payload()
    assert description.strip() == readme.strip()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert links, "the README links to the project"
    for link in links:
        assert link.startswith("https://"), f"{name}'s README links to {link!r}, which is broken on PyPI"


@pytest.mark.slow
def test_display_keeps_kaleido_behind_the_png_extra(dist):
    metadata, _ = wheel_metadata(dist, "nnterp-display")
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist")]
    kaleido = [r for r in requirements if r.name == "kaleido"]
    assert len(kaleido) == 1 and str(kaleido[0].marker) == 'extra == "png"'
    assert "png" in metadata.get_all("Provides-Extra")
    floors = {r.name: r.specifier for r in requirements if not r.marker}
    assert "6.1.0" not in floors["plotly"] and "6.1.1" in floors["plotly"]  # kaleido 1.x needs plotly >= 6.1.1


def declared_floors() -> dict[str, str]:
    """``{dependency: lowest version}`` of every ``>=`` bound in the four distributions' dependencies
    and extras (nnterp's own exact pins excluded)."""
    floors: dict[str, str] = {}
    for name in PACKAGES:
        project = pyproject(ROOT / "packages" / name / "pyproject.toml")["project"]
        lines = list(project["dependencies"])
        for extra in project.get("optional-dependencies", {}).values():
            lines.extend(extra)
        for line in lines:
            requirement = Requirement(line)
            if requirement.name.startswith("nnterp"):
                continue
            lows = [spec.version for spec in requirement.specifier if spec.operator == ">="]
            assert lows, f"{name}: {line} has no floor"
            floors[requirement.name] = lows[0]
    return floors


def test_torch_floor_is_what_transformers_5_accepts():
    assert declared_floors()["torch"] == "2.6"


def test_the_floors_environment_pins_every_declared_floor():
    environment = pyproject(ROOT / "pyproject.toml")["tool"]["hatch"]["envs"]["floors"]
    pins = {}
    for line in environment["dependencies"]:
        requirement = Requirement(line)
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if exact:
            pins[requirement.name] = exact[0]
    members = [m if isinstance(m, str) else m["path"] for m in environment["workspace"]["members"]]
    assert sorted(members) == sorted(f"packages/{name}" for name in PACKAGES)
    real_model_only = {"gguf", "accelerate"}  # the real-model extra: the smoke runs on tiny models
    for dependency, floor in declared_floors().items():
        if dependency in real_model_only:
            continue
        if dependency in NOT_AT_FLOOR:
            assert dependency in pins, dependency
            continue
        assert pins.get(dependency) in (floor, floor + ".0", floor + ".0.0"), (
            f"{dependency}: declared >= {floor}, the floors environment installs {pins.get(dependency)}"
        )
