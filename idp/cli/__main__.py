"""``python -m idp.cli``."""
from . import main

main()
