"""``python -m memdiag``: the ``memdiag`` command (needs the ``cli`` extra)."""

from .cli import main

main()
