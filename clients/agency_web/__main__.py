"""Run a demo agency: ``python -m clients.agency_web`` (see clients/README.md)."""

import sys

from clients.agency_web import create_app


def main() -> None:
    """Start the development server on AGENCY_HOST:AGENCY_PORT."""
    try:
        app = create_app()
    except ValueError as error:
        sys.exit(f"agency_web: {error}")
    settings = app.extensions["agency_settings"]
    print(f" * {settings.agency.name_en}: {settings.base_url}/ (redirect URI {settings.redirect_uri})")
    app.run(host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
