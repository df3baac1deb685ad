"""Test-only mitmproxy addon: send every request to the local sink, keeping its Host header.

Lets real clients and SDKs talk to their vendors' real host names (so the
signatures apply) while every connection the proxy opens goes to 127.0.0.1.
Fails closed: a server connection to anything but loopback is refused.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import ctx, http


class RedirectToSink:
    def load(self, loader: Any) -> None:
        loader.add_option("sink", str, "", "host:port of the local sink every request is sent to")

    def request(self, flow: http.HTTPFlow) -> None:
        host, _, port = ctx.options.sink.rpartition(":")
        original = flow.request.host_header or flow.request.pretty_host
        flow.request.host = host
        flow.request.port = int(port)
        flow.request.host_header = original

    # a streamed request (egressaudit_stream_large_bodies) connects upstream at the headers stage, before `request`
    requestheaders = request

    def server_connect(self, data: Any) -> None:
        addr = data.server.address
        if addr is None or addr[0] not in ("127.0.0.1", "::1", "localhost"):
            data.server.error = f"test network rule: refusing to connect to {addr}"


addons = [RedirectToSink()]
