"""``radapt serve``: the HTTP server (uvicorn, one process per accelerator).

    radapt serve --model builtin:tiny-clip --host 127.0.0.1 --port 8000

Flags override ``RADAPT_*`` environment variables, which override the ``--config`` file.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

import uvicorn


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP with R-Adapt robust mode per request",
                       description="Every setting also reads RADAPT_<NAME> and the --config file; see "
                                   "docs/configuration.md for the ones without a flag.")
    p.add_argument("--model", action="append", dest="models", metavar="M",
                   help=_help("models", "hub id, local folder or builtin: name (repeat for several)"))
    p.add_argument("--adapter", action="append", dest="adapters", metavar="NAME=FILE",
                   help=_help("adapters", "load an adapter file at start (repeatable)"))
    p.add_argument("--adapter-dir", help=_help("adapter_dir"))
    p.add_argument("--adapter-store", metavar="URL", help=_help("adapter_store"))
    p.add_argument("--adapter-sync-s", type=float, help=_help("adapter_sync_s"))
    p.add_argument("--sigma", type=float, help=_help("sigma", "filter sigma of the default (white) adapter, pixels "
                                                              "(unset: a builtin model's swept value, else 1.0)"))
    p.add_argument("--alpha", type=float, help=_help("alpha", "anchor weight of the default adapter, [0, 1] "
                                                              "(unset: a builtin model's swept value, else 0.5)"))
    p.add_argument("--default-robust", action=argparse.BooleanOptionalAction, default=None,
                   help=_help("default_robust"))
    p.add_argument("--allow-weight-mismatch", action=argparse.BooleanOptionalAction, default=None,
                   help=_help("allow_weight_mismatch"))
    p.add_argument("--config", dest="config_file", help=_help("config_file"))
    p.add_argument("--host", help=_help("host"))
    p.add_argument("--port", type=int, help=_help("port"))
    p.add_argument("--device", help=_help("device"))
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], help=_help("dtype"))
    p.add_argument("--max-batch-size", type=int, help=_help("max_batch_size"))
    p.add_argument("--max-wait-ms", type=float, help=_help("max_wait_ms"))
    p.add_argument("--max-queue", type=int, help=_help("max_queue"))
    p.add_argument("--request-timeout-s", type=float, help=_help("request_timeout_s"))
    p.add_argument("--preprocess-workers", type=int, help=_help("preprocess_workers"))
    p.add_argument("--allow-remote-images", action=argparse.BooleanOptionalAction, default=None,
                   help=_help("allow_remote_images"))
    p.add_argument("--max-new-tokens", type=int, help=_help("max_new_tokens"))
    p.add_argument("--max-running-requests", type=int, help=_help("max_running_requests"))
    p.add_argument("--max-batch-tokens", type=int, help=_help("max_batch_tokens"))
    p.add_argument("--shutdown-grace-s", type=float,
                   help="on SIGTERM, seconds in-flight work may take before it gets 503 "
                        "(default: request timeout + 5)")
    p.add_argument("--playground", action=argparse.BooleanOptionalAction, default=None, help=_help("playground"))
    p.add_argument("--attack-max-eps", type=int, help=_help("attack_max_eps"))
    p.add_argument("--attack-max-steps", type=int, help=_help("attack_max_steps"))
    p.add_argument("--attack-share", type=float, help=_help("attack_share"))
    p.add_argument("--torch-threads", type=int, help=_help("torch_threads"))
    p.add_argument("--switch-interval-ms", type=float, help=_help("switch_interval_ms"))
    p.set_defaults(func=run)


def _help(field: str, text: str | None = None) -> str:
    """A flag's help: the setting's description and its default (argparse-escaped)."""
    from service.settings import Settings

    info = Settings.model_fields[field]
    default = info.get_default(call_default_factory=True)
    shown = ", ".join(default) if isinstance(default, list) and default else default
    suffix = "" if shown is None or shown == [] else f" (default: {shown})"
    return f"{text or info.description}{suffix}".replace("%", "%%")


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (None when it can); checked before any model loads."""
    if port == 0:
        return None
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            s.bind((host, port))
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port or stop what uses it"
    return None


SETTING_FLAGS = ("models", "adapters", "adapter_dir", "adapter_store", "adapter_sync_s", "sigma", "alpha",
                 "default_robust", "config_file", "host",
                 "port", "device", "dtype", "max_batch_size", "max_wait_ms", "max_queue", "request_timeout_s",
                 "preprocess_workers", "allow_remote_images", "max_new_tokens", "max_running_requests",
                 "max_batch_tokens", "shutdown_grace_s", "allow_weight_mismatch", "torch_threads",
                 "switch_interval_ms", "playground", "attack_max_eps", "attack_max_steps",
                 "attack_share")


def run(args: argparse.Namespace) -> int:
    from service.app import create_app
    from service.settings import SettingsError, load_settings

    try:
        settings = load_settings(**{k: getattr(args, k) for k in SETTING_FLAGS})
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    busy = port_in_use(settings.host, settings.port)
    if busy is not None:
        print(f"error: {busy}", file=sys.stderr)
        return 2
    failure: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        failure.append(exc)
        print(f"error: {exc}", file=sys.stderr)
        if server is not None:
            server.should_exit = True

    # measured on an H200 (bench/gpu): 5 ms (Python's default) -> 0.5 ms took head-of-line latency from 6.8x to
    # 2.4x and 16-client generation throughput from 2.4x to 4.6x one client's
    sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    app = create_app(settings, on_fatal=on_fatal)
    grace = float(settings.shutdown_grace_s or 0.0)
    # uvicorn's own limit comes after ours, so nothing in flight is ever cut off with its plain-text 500
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                            timeout_graceful_shutdown=grace + 5.0)
    server = DrainingServer(config, app, grace)
    server.run()
    return 1 if failure else 0


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose SIGTERM/SIGINT first drains the engine (readiness fails, nothing new is
    admitted, in-flight work gets ``grace`` seconds, then 503) while uvicorn stops listening."""

    def __init__(self, config: uvicorn.Config, app: Any, grace: float) -> None:
        super().__init__(config)
        self.app, self.grace = app, grace

    def handle_exit(self, sig: int, frame: Any) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        loop = getattr(self.app.state, "loop", None)
        if first and loop is not None:  # a signal handler: hand the drain to the event loop
            engine = self.app.state.engine
            loop.call_soon_threadsafe(lambda: loop.create_task(engine.drain(self.grace)))
        self._captured_signals.clear()  # a drained server exits by itself, with status 0
