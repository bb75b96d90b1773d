"""nnterp: one standardized NNsight interface over HuggingFace transformer language models.

Every architecture is seen through the same tree (``embed_tokens``, ``layers[i].self_attn``,
``layers[i].mlp``, ``ln_final``, ``lm_head``) and the same accessors (``layers_output[i]``,
``attention_probabilities[i]``, ``logits``, ...), while the original HuggingFace forward runs
unchanged.

Example:
    >>> from nnterp import StandardizedTransformer
    >>> model = StandardizedTransformer("gpt2")
    >>> with model.trace("Hello world"):
    ...     hidden = model.layers_output[5].save()
"""

from __future__ import annotations

import pkgutil as _pkgutil
from typing import TYPE_CHECKING, Any

# The four nnterp distributions install into one `nnterp` directory from wheels, but into
# separate source trees when installed editable; extending the path lets either layout work.
__path__ = _pkgutil.extend_path(__path__, __name__)

import sys as _sys  # noqa: E402

from nnterp import compat as _compat  # noqa: E402

# nnterp 1.x (distribution `nnterp`) writes into this same folder: refuse to run a mixture.
_compat.refuse_legacy_install()

# nnterp 1.x's `nnterp.rename_utils` (RenameConfig, AttnProbFunction, its helpers).
from nnterp import legacy_rename as rename_utils  # noqa: E402

_sys.modules.setdefault("nnterp.rename_utils", rename_utils)

from nnterp._sibling_hints import install as _install_sibling_hints  # noqa: E402

_install_sibling_hints()

__version__ = "2.0.0"

_LAZY = {
    "StandardizedTransformer": "nnterp.standardized_transformer",
    "ArchitectureSpec": "nnterp.spec",
    "NnterpError": "nnterp.errors",
    "RenamingError": "nnterp.errors",
    "InvalidInputError": "nnterp.errors",
    "LayerIndexError": "nnterp.errors",
    "TokenPositionError": "nnterp.errors",
    "UnavailableComponentError": "nnterp.errors",
    "PluginError": "nnterp.errors",
    "load_default_model": "nnterp.default_model",
    "load_gemma3_270m": "nnterp.default_model",
    "load_shipped_model": "nnterp.default_model",
    "shipped_model_path": "nnterp.default_model",
    "cache_activations": "nnterp.cache",
    "ModuleAccessor": "nnterp.compat",
    "RenameConfig": "nnterp.compat",
    "get_rename_dict": "nnterp.compat",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from nnterp.cache import cache_activations
    from nnterp.compat import ModuleAccessor, RenameConfig, get_rename_dict
    from nnterp.default_model import load_default_model, load_gemma3_270m, load_shipped_model, shipped_model_path
    from nnterp.errors import (
        InvalidInputError,
        LayerIndexError,
        NnterpError,
        PluginError,
        RenamingError,
        TokenPositionError,
        UnavailableComponentError,
    )
    from nnterp.spec import ArchitectureSpec
    from nnterp.standardized_transformer import StandardizedTransformer


def __getattr__(name: str) -> Any:
    # Lazy so that `import nnterp` stays cheap: torch and nnsight load on first real use.
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'nnterp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
