"""An httpx transport that spreads requests over several small connection pools.

httpcore 1.0's connection pool re-examines every connection for every waiting
request each time a request starts or finishes (encode/httpcore#1035), so its
cost per request grows with the number of connections. Measured against a local
server answering at once: bursts of 64 concurrent requests on 64 keep-alive
connections took 0.36 s of client CPU each; spread over 16 pools, 0.044 s.
Requests go to the pools in turn, and each pool keeps its own connections alive.

Proxies from the environment (`HTTPS_PROXY`, `NO_PROXY`, ...) are honoured as
httpx's own client would, and all pools share one SSL context (building one
reads the CA bundle).
"""

from __future__ import annotations

import itertools
import math
import urllib.request
from urllib.parse import urlparse

import httpx

__all__ = ["POOL_CONNECTIONS", "PooledTransport", "environment_proxy"]

# Connections per pool: small enough that a pool's bookkeeping stays cheap, large
# enough that requests sent to a pool in turn rarely wait behind slow ones.
POOL_CONNECTIONS = 8


class PooledTransport(httpx.AsyncBaseTransport):
    """Up to `max_connections` keep-alive connections to `base_url`, in pools of at most
    `POOL_CONNECTIONS`."""

    def __init__(self, base_url: str, max_connections: int) -> None:
        ssl_context = httpx.create_ssl_context()
        proxy = environment_proxy(base_url)
        count = math.ceil(max_connections / POOL_CONNECTIONS)
        # The connections each pool may hold, adding up to `max_connections`.
        self.pool_sizes = tuple(
            max_connections // count + (i < max_connections % count) for i in range(count)
        )
        self._pools = [
            httpx.AsyncHTTPTransport(
                verify=ssl_context,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                proxy=proxy,
            )
            for size in self.pool_sizes
        ]
        self._next = itertools.cycle(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._next).handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def environment_proxy(url: str) -> str | None:
    """The proxy the environment sets for `url` (`<scheme>_proxy`, else `all_proxy`), if any.

    `NO_PROXY` and its host patterns are applied as by `urllib`.
    """
    parsed = urlparse(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass(parsed.hostname or ""):
        return None
    return proxy
