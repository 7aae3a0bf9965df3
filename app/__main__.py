"""``python -m app``: serve on ORCH_HOST:ORCH_PORT with uvicorn."""

from __future__ import annotations

import uvicorn

from app.settings import ConfigError, exit_on_config_error, load_settings


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as error:
        exit_on_config_error(error)
        return
    uvicorn.run(
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


if __name__ == "__main__":
    main()
