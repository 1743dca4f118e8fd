"""Reaching a Ray cluster: ``ray.init`` in the flow's namespace with a clear error when it fails,
a quick check that something listens at the address, and reading Ray's errors."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

#: How long the launcher tries to reach the cluster's address before it gives up.
CONNECT_TIMEOUT = 5.0
#: Ray Client connections tried before giving up, when its server fails to start a session.
CLIENT_ATTEMPTS = 3


class RayError(Exception):
    """Ray is missing, the cluster cannot be reached, or a node cannot be placed: nothing starts."""


def connect(ray: Any, address: str, flow: str, pause: Callable[[float], None] = time.sleep) -> None:
    """``ray.init`` for the flow's namespace; RayError with Ray's own words when it cannot.

    Ray Client's proxy can fail to start a session's server for a passing reason (it inspects a
    process of an earlier session that has just ended), so that failure is tried again.
    """
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(
                address=address,
                namespace=f"flujo-{flow}",
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=False,
            )
            return
        except Exception as error:  # ConnectionError, RuntimeError, ValueError: Ray's own words say why
            if attempt < CLIENT_ATTEMPTS and "Initialization failure from server" in str(error):
                with contextlib.suppress(Exception):
                    ray.shutdown()  # whatever the failed attempt left connected
                pause(1.0)
                continue
            raise RayError(f"cannot connect to the Ray cluster at {address}: {error}") from None


def reachable(address: str) -> str | None:
    """Fail fast, and clearly, when nothing listens at a HOST:PORT (Ray itself retries for a
    minute); the local address this machine reached it from (None for "auto" and the like)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None  # "auto", or a form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT) as connection:
            return str(connection.getsockname()[0])
    except OSError as error:
        raise RayError(
            f"cannot connect to the Ray cluster at {address}: {error.strerror or error} "
            "(start one with `ray start --head`, or give its address)"
        ) from None


def unavailable(ray: Any) -> type[BaseException]:
    """Ray's error for an actor it cannot reach right now (not known dead), where Ray has one."""
    return getattr(ray.exceptions, "ActorUnavailableError", ()) or type("_Never", (Exception,), {})


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
