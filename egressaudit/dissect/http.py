"""The request line and headers of an HTTP/1.x request (RFC 9112), as far as they arrived.

Used on the first client segment of a TCP flow to read the ``Host`` header;
absolute-form targets (requests to a proxy) give the host from the URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["FIRST_BYTES", "METHODS", "HttpRequest", "parse_request"]

METHODS = frozenset(b"GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK REPORT SEARCH".split())
_REQUEST_LINE = re.compile(rb"^([A-Z]{3,12}) (\S{1,8192}) HTTP/(\d)\.(\d)$")
MAX_HEADERS = 128
#: A request starts with its method, in capitals: a stream starting with another byte is not HTTP/1.x.
FIRST_BYTES = range(ord("A"), ord("Z") + 1)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    version: str
    host: str | None
    user_agent: str | None
    #: True when the end of the header block was inside the data.
    complete: bool


def parse_request(data: bytes) -> HttpRequest | None:
    """Parse an HTTP/1.x request head; None when ``data`` does not start with one."""
    line_end = data.find(b"\r\n")
    first = data[:line_end] if line_end >= 0 else data
    m = _REQUEST_LINE.match(first)
    if m is None or m.group(1) not in METHODS:
        return None
    method, target = m.group(1).decode(), m.group(2).decode("latin-1")
    version = f"{m.group(3).decode()}.{m.group(4).decode()}"
    host = ua = None
    head_end = data.find(b"\r\n\r\n")
    block = data[line_end + 2 : head_end if head_end >= 0 else len(data)] if line_end >= 0 else b""
    for raw in block.split(b"\r\n")[:MAX_HEADERS]:
        name, sep, value = raw.partition(b":")
        if not sep:
            continue
        key = name.strip().lower()
        if key == b"host" and host is None:
            host = value.strip().decode("latin-1") or None
        elif key == b"user-agent" and ua is None:
            ua = value.strip().decode("latin-1") or None
    if method == "CONNECT" and host is None:
        host = target
    elif "://" in target[:16]:
        try:
            host = urlsplit(target).netloc or host
        except ValueError:
            pass
    return HttpRequest(method, target, version, host, ua, head_end >= 0)
