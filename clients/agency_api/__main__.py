"""Run the agency API: ``python -m clients.agency_api`` (see clients/README.md)."""

import os
import sys

from clients.agency_api import create_app


def main() -> None:
    """Start the development server on 127.0.0.1:AGENCY_API_PORT (default 5010)."""
    try:
        app = create_app()
    except ValueError as error:
        sys.exit(f"agency_api: {error}")
    app.run(host="127.0.0.1", port=int(os.environ.get("AGENCY_API_PORT", "5010")))


if __name__ == "__main__":
    main()
