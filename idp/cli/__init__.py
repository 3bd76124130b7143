"""The ``idp`` command line: one module per command group, and the two ways to run a node
(``idp dev`` and ``idp serve``).

May import: everything in idp.
"""
from .main import main

__all__ = ["main"]
