"""``python -m app`` (and the ``orchestrators`` console script): serve on ORCH_HOST:ORCH_PORT with
uvicorn; ``--host``/``--port`` override those two, ``--help`` and ``--version`` answer and exit.

argparse, not Typer: four options on one command need nothing beyond the standard library, and
``--help`` then answers in a few milliseconds without importing the service.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import socket
import sys

from app import __version__

STARTUP_FAILED_EXIT = 3  # as app.main's: something could not be opened at startup

DESCRIPTION = """\
Serve the orchestrators API (OpenAI-compatible) with uvicorn, one worker.

Everything else is configured with ORCH_* environment variables (or a .env file
in the working directory): see docs/configuration.md and .env.example. With no
configuration it serves the offline demo provider on 127.0.0.1:8088, SQLite
under ./instance, auth on (a development token is generated and printed).
"""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got {text!r}")
    return port


def _host(text: str) -> str:
    from app.settings import is_bind_host

    if not is_bind_host(text):
        raise argparse.ArgumentTypeError(
            f"expected an IP address (127.0.0.1, 0.0.0.0, ::1, ::) or a host name (localhost), got {text!r}"
        )
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app" if sys.argv[0].endswith("__main__.py") else "orchestrators",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orchestrators {__version__}")
    parser.add_argument("--host", type=_host, help="address to listen on (overrides ORCH_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="TCP port to listen on (overrides ORCH_PORT; default 8088)")
    return parser.parse_args(argv)


def listen(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for every address ``host`` resolves to, as the event loop would bind them
    (SO_REUSEADDR, IPv6 sockets IPv6-only, an address family the machine lacks skipped).

    Bound here, before the app opens anything: uvicorn binds only after the lifespan has started
    (databases opened, migrations run), and reports a failure as a bare ``[Errno -2] Name or
    service not known`` that names neither the flag nor the value.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    unavailable: OSError | None = None
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
                unavailable = exc  # e.g. localhost's ::1 on a host without IPv6
                sockets.pop().close()
        if not sockets:
            raise unavailable or OSError(errno.EADDRNOTAVAIL, "no address to bind")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Through the environment, so the app uvicorn builds (from the environment, as under a plain
    # `uvicorn app.main:app`) sees the same address as the sockets bound below.
    if args.host is not None:
        os.environ["ORCH_HOST"] = args.host
    if args.port is not None:
        os.environ["ORCH_PORT"] = str(args.port)

    # Here, not at the top: --help and --version answer without loading uvicorn and pydantic.
    import uvicorn

    from app.settings import ConfigError, exit_on_config_error, load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        exit_on_config_error(error)
        return
    config = uvicorn.Config(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        log_config=None,  # app.main configures JSON logging itself
        access_log=False,  # the request middleware writes the access log
        proxy_headers=False,  # X-Forwarded-For is only trusted from ORCH_TRUSTED_PROXIES
        server_header=False,
        ws="none",  # no WebSocket route: an upgrade request is an ordinary (404) request
        timeout_graceful_shutdown=settings.shutdown_grace_sec,
    )
    # Builds the app from the environment (a bad value or policy file stops here); opens nothing.
    config.load()
    try:
        sockets = listen(settings.host, settings.port)
    except OSError as exc:  # a name that does not resolve, a port in use, a privileged port, ...
        reason = exc.strerror or str(exc)
        host_flag = "--host" if args.host is not None else "ORCH_HOST"
        port_flag = "--port" if args.port is not None else "ORCH_PORT"
        print(
            f"orchestrators: cannot listen on {host_flag}={settings.host!r} {port_flag}={settings.port}: {reason}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(STARTUP_FAILED_EXIT) from None
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s (Press CTRL+C to quit)",
        ", ".join("http://{}:{}".format(*_printable(sock.getsockname())) for sock in sockets),
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        raise SystemExit(STARTUP_FAILED_EXIT)


def _printable(address: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    host, port = address[0], address[1]
    return (f"[{host}]" if ":" in host else host), port


if __name__ == "__main__":
    main()
