"""What installing nnterp-core costs code that does not use it: pytest's auto-loaded nnterp plugin
imports nothing heavy, and the usual optional-dependency check works on the sibling packages."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_pytest_plugin_imports_neither_torch_nor_transformers():
    output = run_python(
        "import nnterp.testing.pytest_plugin, sys; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    assert output.split() == ["False", "False"]


def run_pytest(directory, test_file: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_plugin_loads_torch_only_when_its_fixture_is_used(tmp_path):
    (tmp_path / "test_unrelated.py").write_text(
        textwrap.dedent("""
        import sys

        def test_nothing_heavy_was_imported():
            assert "nnterp.testing.pytest_plugin" in sys.modules  # the plugin is active
            assert [m for m in ("torch", "transformers", "nnsight") if m in sys.modules] == []
    """)
    )
    (tmp_path / "test_uses_fixture.py").write_text(
        textwrap.dedent("""
        import sys

        def test_tokenizer(nnterp_tiny_tokenizer):
            assert nnterp_tiny_tokenizer("Hello world")["input_ids"]
            assert "torch" in sys.modules  # the fixture brought it
    """)
    )
    assert "1 passed" in run_pytest(tmp_path, "test_unrelated.py")
    assert "1 passed" in run_pytest(tmp_path, "test_uses_fixture.py")


#: Runs with nnterp-display hidden: the folders of the `nnterp` namespace that hold `display/`
#: are dropped (installed editable, each distribution is its own folder).
WITHOUT_DISPLAY = """
    import importlib.util, os, sys
    import nnterp
    nnterp.__path__[:] = [p for p in nnterp.__path__ if not os.path.isdir(os.path.join(p, "display"))]
    assert nnterp.__path__ and "nnterp.display" not in sys.modules
    print("spec", importlib.util.find_spec("nnterp.display"))
    for attempt in ("import nnterp.display", "import importlib; importlib.import_module('nnterp.display')"):
        try:
            exec(attempt)
        except ModuleNotFoundError as error:
            print("import", error.name, "|", error)
"""


def test_find_spec_of_a_missing_sibling_is_none_and_importing_it_names_the_extra():
    lines = run_python(WITHOUT_DISPLAY).splitlines()
    assert lines[0] == "spec None"
    imports = [line for line in lines if line.startswith("import ")]
    assert len(imports) == 2
    for line in imports:
        assert line.startswith("import nnterp.display |")
        assert "`pip install nnterp-display`" in line and "`pip install 'nnterp-core[display]'`" in line


def test_find_spec_of_an_installed_sibling_still_finds_it():
    output = run_python("import importlib.util; print(importlib.util.find_spec('nnterp.display') is not None)")
    assert output.strip() == "True"
