"""mkdocs hooks: fill the generated parts of the documentation (see ``mkdocs.yml``)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

#: The line of ``architectures.md`` replaced by the generated table.
ARCHITECTURES_MARKER = "<!-- architectures-table -->"
#: The line of ``concepts.md`` replaced by the site table (`nnterp.sites.markdown_table`).
SITES_MARKER = "<!-- sites-table -->"

_GENERATOR = Path(__file__).with_name("gen_architectures.py")
_ROOT = Path(__file__).resolve().parent.parent
_DISTRIBUTIONS = ("nnterp-core", "nnterp-interventions", "nnterp-display", "nnterp-models-contrib")
#: Where the merged ``nnterp`` source tree is laid out (``paths`` of mkdocstrings in mkdocs.yml).
API_SOURCE = _ROOT / "build" / "docs-api-src"


def merge_namespace(target: Path = API_SOURCE) -> Path:
    """Lay out one ``nnterp`` package made of symbolic links to the four distributions' sources.

    The distributions share the ``nnterp`` namespace through ``pkgutil.extend_path``, which the
    API documentation's source reader (griffe) does not follow across directories; one merged
    tree lets it see ``nnterp.interventions``, ``nnterp.display`` and ``nnterp.contrib``
    beside core's modules.
    """
    package = target / "nnterp"
    if target.exists():
        shutil.rmtree(target)
    package.mkdir(parents=True)
    for distribution in _DISTRIBUTIONS:
        source = _ROOT / "packages" / distribution / "src" / "nnterp"
        for child in sorted(source.iterdir()):
            if child.name == "__pycache__" or (package / child.name).exists():
                continue
            (package / child.name).symlink_to(child, target_is_directory=child.is_dir())
    return target


@event_priority(100)  # before mkdocstrings looks for the sources
def on_config(config: Any) -> Any:
    """Build the merged source tree before mkdocstrings reads it."""
    merge_namespace()
    return config


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("nnterp_docs_gen_architectures", _GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _site_table() -> str:
    from nnterp.sites import markdown_table

    return markdown_table()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the supported-architectures table into ``architectures.md`` and the site table
    into ``concepts.md``."""
    generated = {
        "architectures.md": (ARCHITECTURES_MARKER, lambda: _generator().render()),
        "concepts.md": (SITES_MARKER, _site_table),
    }
    if page.file.src_uri not in generated:
        return markdown
    marker, render = generated[page.file.src_uri]
    if marker not in markdown:
        raise ValueError(f"{page.file.src_uri} lost its {marker} line")
    return markdown.replace(marker, render())


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    """Rebuild on ``mkdocs serve`` when the status file changes."""
    status_file = _generator().STATUS_FILE
    if status_file.exists():
        server.watch(str(status_file))
    return server
