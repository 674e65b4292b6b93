"""`funad serve MODEL_DIR --host 127.0.0.1 --port 8000`: the model behind HTTP (see :mod:`funad.service`)."""

from __future__ import annotations

import argparse
import logging
import socket

from funad.cli.loading import add_device_option, add_model_argument
from funad.utils.arguments import port_number, positive_float, positive_int

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve a fitted model over HTTP: POST /predict, GET /health, "
                                   "a form at /")
    add_model_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=8000, help="TCP port to listen on (default 8000)")
    add_device_option(parser)
    parser.add_argument("--max-upload-mb", type=positive_float, default=50,
                        help="largest image file accepted (default 50)")
    parser.add_argument("--max-connections", type=positive_int, default=100,
                        help="open connections beyond this get 503 at once instead of queueing (default 100)")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> None:
    from funad.utils.startup import garbage_collection_paused

    try:
        with garbage_collection_paused():  # the service imports torch: as load_model_directory
            import uvicorn

            from funad.service import create_app
    except ImportError as error:
        raise RuntimeError(f"funad serve needs the serve extra: pip install 'funad[serve]' ({error})") from error
    from funad.cli.loading import load_model_directory

    _check_address(args.host, args.port)
    model = load_model_directory(args.model, args.device)
    model.progress = False
    app = create_app(model, args.model.resolve(), int(args.max_upload_mb * 1024 * 1024))
    logger.info("serving %s on http://%s:%d/", args.model, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=args.max_connections,
                log_level="warning" if args.quiet else "info")


def _check_address(host: str, port: int) -> None:
    """A ValueError naming ``host:port`` if the service could listen on none of its addresses (an unknown host, a
    port in use), before the model's minutes of loading; uvicorn would only exit with status 3 after them."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ValueError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error
    problems = []
    for family, kind, protocol, _, address in addresses:  # uvicorn listens on each it can (IPv6 may be off)
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
                probe.bind(address)
            return
        except OSError as error:
            problems.append(error.strerror or str(error))
    raise ValueError(f"cannot listen on {host}:{port}: {'; '.join(dict.fromkeys(problems))}")
