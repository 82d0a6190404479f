"""The directory ``memdiag run`` puts first on the child's ``PYTHONPATH``.

It holds only ``sitecustomize.py``, which Python imports at start-up; it is never
imported as part of the ``memdiag`` package.
"""
