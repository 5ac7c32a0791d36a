"""``radapt serve``: the HTTP server (uvicorn, one process per accelerator).

    radapt serve --model builtin:tiny-clip --host 127.0.0.1 --port 8000

Flags override ``RADAPT_*`` environment variables, which override the ``--config`` file.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP with R-Adapt robust mode per request")
    p.add_argument("--model", action="append", dest="models", metavar="M",
                   help="hub id, local folder or builtin: name (repeat for several; default builtin:tiny-clip)")
    p.add_argument("--adapter", action="append", dest="adapters", metavar="NAME=FILE",
                   help="load an adapter file at start (repeatable)")
    p.add_argument("--adapter-dir", help="folder POST /v1/adapters may load files from")
    p.add_argument("--sigma", type=float, help="filter sigma of the default (white) adapter, pixels")
    p.add_argument("--alpha", type=float, help="anchor weight of the default adapter, [0, 1]")
    p.add_argument("--default-robust", action=argparse.BooleanOptionalAction, default=None,
                   help="robust mode for requests that do not say (default off)")
    p.add_argument("--config", dest="config_file", help="YAML or JSON settings file")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--device", help="auto (default), cpu or cuda:N")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-wait-ms", type=float)
    p.add_argument("--max-queue", type=int)
    p.add_argument("--request-timeout-s", type=float)
    p.add_argument("--preprocess-workers", type=int)
    p.add_argument("--allow-remote-images", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=run)


SETTING_FLAGS = ("models", "adapters", "adapter_dir", "sigma", "alpha", "default_robust", "config_file", "host",
                 "port", "device", "dtype", "max_batch_size", "max_wait_ms", "max_queue", "request_timeout_s",
                 "preprocess_workers", "allow_remote_images")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.settings import SettingsError, load_settings

    try:
        settings = load_settings(**{k: getattr(args, k) for k in SETTING_FLAGS})
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failure: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        failure.append(exc)
        print(f"error: {exc}", file=sys.stderr)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    server.run()
    return 1 if failure else 0
