"""nnterp's logger (``nnterp.logging.logger``, as in nnterp 1.x), and the upgrade guard's
second door.

Every module of nnterp 1.x imports ``nnterp.logging`` first. When nnterp 1.x is installed
*after* nnterp-core, its files replace 2.0's ``__init__`` but this package still takes
precedence over 1.x's ``logging.py``, so importing nnterp raises `ConflictingInstallError`
with the fix instead of running a mixture of the two versions.

Example:
    >>> from nnterp.logging import logger
    >>> logger.name
    'nnterp'
"""

from __future__ import annotations

import logging as _logging

from nnterp._install_guard import refuse_legacy_install

refuse_legacy_install()

#: The package-level logger; nnterp adds no handler (configure logging as usual).
logger = _logging.getLogger("nnterp")

__all__ = ["logger"]
