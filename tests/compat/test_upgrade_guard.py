"""Upgrading from nnterp 1.x: the real nnterp 1.3.0 wheel, then nnterp-core on top, in a
throwaway virtual environment.

nnterp 1.x (distribution ``nnterp``) and nnterp-core install into the same ``nnterp/`` folder,
so after ``pip install nnterp-core`` over 1.3 the folder holds a mixture; ``import nnterp`` must
refuse it and name the fix, and the fix (uninstall ``nnterp``, reinstall the nnterp-*
distributions) must leave a working 2.0.

The 2.0 distributions are installed from wheels assembled here from the source tree (the files
hatch packages, with a dist-info), so the test needs neither a build backend nor the network;
only the 1.3 wheel comes from PyPI when /tmp/nnterp13 does not hold it. The real 2.0 wheels are
built and checked in tests/packaging/test_wheels.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL_WHEEL_1X = Path("/tmp/nnterp13/nnterp-1.3.0-py3-none-any.whl")
#: The 2.0 distributions the scenario installs, with the folder each packages.
OURS = {"nnterp-core": "packages/nnterp-core/src", "nnterp-interventions": "packages/nnterp-interventions/src"}
#: Files only nnterp 1.3 has: left beside 2.0's code after the upgrade.
ONLY_1X = ("display.py", "interventions.py", "rename_utils.py", "logging.py")
#: Files both ship (2.0's overwrites 1.3's; uninstalling 1.3 deletes them): distribution -> paths.
SHARED = {"nnterp-core": ("__init__.py", "utils.py"), "nnterp-interventions": ("prompt_utils.py",)}


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    if check:
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _source_wheel(distribution: str, source: Path, out: Path) -> Path:
    """A wheel of ``distribution`` holding the ``nnterp/`` files under ``source``."""
    pyproject = (source.parent / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)  # type: ignore[union-attr]
    stem = f"{distribution.replace('-', '_')}-{version}"
    files = {
        path.relative_to(source).as_posix(): path.read_bytes()
        for path in sorted((source / "nnterp").rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }
    files[f"{stem}.dist-info/METADATA"] = f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n".encode()
    files[f"{stem}.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: nnterp-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [_record_line(name, data) for name, data in files.items()] + [f"{stem}.dist-info/RECORD,,"]
    files[f"{stem}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def _wheel_1x(out: Path) -> Path:
    if LOCAL_WHEEL_1X.exists():
        return LOCAL_WHEEL_1X
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "nnterp==1.3.0", "-d", str(out)])
    return next(out.glob("nnterp-1.3.0-*.whl"))


@pytest.fixture()
def environment(tmp_path):
    """(python of a fresh venv without pip, pip command aimed at it, its site-packages)."""
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = str(env_dir / "bin" / "python")
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    pip = [sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check"]
    return python, pip, site


def test_nnterp_1x_then_nnterp_core_refuses_to_import_and_the_named_fix_works(environment, tmp_path):
    python, pip, site = environment
    ours = {name: _source_wheel(name, ROOT / folder, tmp_path) for name, folder in OURS.items()}
    _run([*pip, "install", "-q", "--no-deps", "--no-index", str(_wheel_1x(tmp_path))])
    _run([*pip, "install", "-q", "--no-deps", "--no-index", *map(str, ours.values())])
    assert all((site / "nnterp" / name).exists() for name in ONLY_1X)  # the mixture pip leaves

    refused = _run([python, "-c", "import nnterp"], check=False)
    assert refused.returncode != 0
    assert "ConflictingInstallError" in refused.stderr and "nnterp 1.3.0" in refused.stderr
    commands = re.findall(r"^\s*(pip .+)$", refused.stderr, re.MULTILINE)
    assert commands[0] == "pip uninstall -y nnterp"
    assert commands[1].startswith("pip install --force-reinstall --no-deps ")
    assert set(commands[1].split()[4:]) == {f"{name}=={wheel.name.split('-')[1]}" for name, wheel in ours.items()}

    # The fix, as the message says it (from the local wheels instead of PyPI).
    _run([*pip, "uninstall", "-y", "-q", "nnterp"])
    for names in SHARED.values():  # why reinstalling is part of the fix
        assert not any((site / "nnterp" / name).exists() for name in names)
    _run([*pip, "install", "-q", "--force-reinstall", "--no-deps", "--no-index", *map(str, ours.values())])
    imported = _run([python, "-c", "import nnterp; print(nnterp.__version__)"])
    assert imported.stdout.strip() == ours["nnterp-core"].name.split("-")[1]
    assert not any((site / "nnterp" / name).exists() for name in ONLY_1X)
    for distribution, names in SHARED.items():
        for name in names:
            shipped = ROOT / OURS[distribution] / "nnterp" / name
            assert (site / "nnterp" / name).read_bytes() == shipped.read_bytes()


def test_nnterp_core_then_nnterp_1x_refuses_to_import_with_the_fix(environment, tmp_path):
    # 1.x's __init__, standardized_transformer and nnsight_utils replace 2.0's files here, so the
    # refusal must come from a file 1.x does not overwrite.
    python, pip, site = environment
    # 1.x's modules import torch before anything of nnterp: let the venv see this one's packages
    # (a path entry, so the editable nnterp installs' .pth files there are not processed).
    (site / "outer_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    ours = {name: _source_wheel(name, ROOT / folder, tmp_path) for name, folder in OURS.items()}
    _run([*pip, "install", "-q", "--no-deps", "--no-index", *map(str, ours.values())])
    _run([*pip, "install", "-q", "--no-deps", "--no-index", str(_wheel_1x(tmp_path))])
    legacy_init = zipfile.ZipFile(_wheel_1x(tmp_path)).read("nnterp/__init__.py")
    assert (site / "nnterp" / "__init__.py").read_bytes() == legacy_init  # 1.x's code would run

    for statement in ("import nnterp", "from nnterp import StandardizedTransformer", "import nnterp.nnsight_utils"):
        refused = _run([python, "-c", statement], check=False)
        assert refused.returncode != 0, statement
        assert "ConflictingInstallError" in refused.stderr and "nnterp 1.3.0" in refused.stderr
        assert "pip uninstall -y nnterp" in refused.stderr
