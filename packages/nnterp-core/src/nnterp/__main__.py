"""``python -m nnterp``: the nnterp command line."""

from nnterp.cli import main

raise SystemExit(main())
