"""The provider under gunicorn, as `idp serve` ran it before it moved to granian, for comparisons
in one benchmark run (`bench/run.py --servers granian,gthread`); not for production.

    IDP_CONFIG=idp.toml python bench/gunicorn_serve.py [gthread|sync]

Same app, same settings file, same start: the app built once and forked (preload), templates
warmed and the heap frozen, the back-channel sweep started in each worker, metrics in
multiprocess mode; `[server] workers` and `threads` as gthread workers (or sync workers).
"""
from __future__ import annotations

import gc
import os
import sys

from gunicorn.app.base import BaseApplication

from idp import create_app
from idp.cli.serve import refuse_development_settings, warm_templates
from idp.platform.metrics import prepare_multiprocess
from idp.platform.settings import load_settings
from idp.protocol.logout import ensure_worker


def main() -> None:
    worker_class = sys.argv[1] if len(sys.argv) > 1 else "gthread"
    settings = load_settings()
    refuse_development_settings(settings)

    class Application(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", settings.server.bind)
            self.cfg.set("workers", settings.server.workers or os.cpu_count() or 1)
            self.cfg.set("worker_class", worker_class)
            self.cfg.set("threads", settings.server.threads)
            self.cfg.set("preload_app", True)
            self.cfg.set("accesslog", None)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("timeout", 30)
            self.cfg.set("post_worker_init", lambda worker: ensure_worker(worker.wsgi))

        def load(self):
            app = create_app(settings)
            warm_templates(app)
            gc.collect()
            gc.freeze()
            return app

    prepare_multiprocess(settings)
    Application().run()


if __name__ == "__main__":
    main()
