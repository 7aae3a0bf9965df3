"""``python -m app``: serve on ORCH_HOST:ORCH_PORT with uvicorn."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sys

import uvicorn

from app.settings import ConfigError, exit_on_config_error, load_settings

STARTUP_FAILED_EXIT = 3  # as app.main's: something could not be opened at startup


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


def main() -> None:
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
        print(
            f"orchestrators: cannot listen on ORCH_HOST={settings.host!r} ORCH_PORT={settings.port}: {reason}",
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
