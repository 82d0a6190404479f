"""``python -m memdiag.cli``: the ``memdiag`` command."""

from . import main

main()
