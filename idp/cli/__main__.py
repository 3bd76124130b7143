"""``python -m idp.cli``."""
from .main import main

main()
