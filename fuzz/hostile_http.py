"""Hostile HAR and saved mitmproxy (.mitm) files, each run through the real ``egressaudit analyze``, ``inventory`` and ``har``.

Seeds are built here with mitmproxy's own pieces: a dozen flows (JSON telemetry
gzip-, brotli- and zstd-encoded, a form, a multipart upload, protobuf, a Sentry
envelope, a WebSocket conversation, a connection error, a streamed upload),
saved by mitmproxy's ``FlowWriter`` (.mitm) and exported by its ``SaveHar``
addon (.har).  A case applies one to three mutations that know the formats:

- flow states (.mitm) and HAR entries: a field anywhere set to text that is not
  UTF-8, an integer too large for its column, the wrong JSON type, an infinite or
  NaN timestamp, a structure nested thousands deep, a non-string flow id;
- bodies with hostile shapes: multipart with tens of thousands of parts (CRLF and
  bare LF), forms and queries with tens of thousands of keys, JSON nested past the
  recursion limit, protobuf nested deep, Sentry envelopes with lying lengths,
  gzip/deflate/brotli/zstd bombs and chains of them, truncated encodings,
  ``Content-Type: application/\\xffjson``;
- the files' bytes: tnetstring length prefixes that lie (larger, smaller, 11 digits),
  cuts at and around every record or entry boundary, garbage between records,
  flipped bytes, empty and non-HAR JSON files.

Each case runs ``egressaudit analyze CASE --out DIR --quiet`` in-process (typer's
CliRunner: the real command, its writes included); when it exits 0, ``inventory``
and ``har`` run on the folder, and ``report`` every ``report_every``-th time.
Every ``subprocess_every``-th case also runs as a real subprocess.  A traceback
(or exit 1, the code for a bug) is counted by cause (``ExceptionType at
file:line``) and the case is kept in ``WORK/crashes/``.

    python fuzz/hostile_http.py --cases 800 --seed 0 --work /tmp/hostile-http   # prints the summary as JSON
    python fuzz/hostile_http.py --case 17 --seed 0 --work /tmp/hostile-http     # one case again, kept in WORK/

Deterministic for a given seed: case ``i`` is made from ``Random(seed * 1_000_003 + i)``.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import random
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # (run as a script or loaded from its path: the fuzz folder is then not a package)
    sys.path.insert(0, str(ROOT))
from fuzz.outcome import Outcome, invoke, message, run_command  # noqa: E402

if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

HOSTILE_INTS = [2**31, 2**31 - 1, -(2**31) - 1, 2**63, -(2**63) - 1, 2**64 + 5, 10**30, -1]
HOSTILE_FLOATS = [float("inf"), float("-inf"), float("nan"), 1e300, -1e300, 2.5e11]


# -- seeds -----------------------------------------------------------------------------------------------------
def _flow(method: str, url: str, body: bytes, headers: dict[str, str], status: int = 200) -> Any:
    from mitmproxy import http
    from mitmproxy.test import tflow

    req = http.Request.make(method, url, b"", headers)
    req.raw_content = body
    f = tflow.tflow(req=req, resp=True)
    assert f.response is not None
    f.response.status_code = status
    f.response.headers["content-type"] = "application/json"
    f.response.content = b'{"ok": true}'
    return f


def _pb_field(no: int, wire: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    if wire == 2:
        payload = varint(len(payload)) + payload
    return varint(no << 3 | wire) + payload


def seed_flows() -> list[Any]:
    """The flows every case starts from (fixed: no randomness, so cases are reproducible from the seed alone)."""
    import brotli  # type: ignore[import-untyped]
    import zstandard
    from mitmproxy.test import tflow
    from mitmproxy.websocket import WebSocketData, WebSocketMessage
    from wsproto.frame_protocol import Opcode

    events = json.dumps(
        {"events": [{"event_type": "meeting_joined", "device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "user_email": "a@example.org"}]}
    ).encode()
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    multipart = (
        b'------B\r\nContent-Disposition: form-data; name="meeting_id"\r\n\r\n85012345678\r\n'
        b'------B\r\nContent-Disposition: form-data; name="file"; filename="minutes.png"\r\nContent-Type: image/png\r\n\r\n'
        + png
        + b"\r\n------B--\r\n"
    )
    envelope = (
        b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","dsn":"https://k@o.ingest.sentry.io/1"}\n{"type":"event","length":17}\n{"message":"hi!"}\n'
    )
    pb = _pb_field(1, 2, b"device-123") + _pb_field(2, 0, b"\x96\x01") + _pb_field(3, 2, _pb_field(1, 2, b"nested text"))
    flows = [
        _flow("POST", "https://api2.amplitude.com/2/httpapi?v=2&client=zoom", gzip.compress(events),
              {"content-type": "application/json", "content-encoding": "gzip"}),
        _flow("POST", "https://log.zoom.us/v1/log", brotli.compress(events), {"content-type": "application/json", "content-encoding": "br"}),
        _flow("POST", "https://browser-intake-datadoghq.com/api/v2/rum", zstandard.ZstdCompressor().compress(events),
              {"content-type": "application/json", "content-encoding": "zstd"}),
        _flow("POST", "https://www.google-analytics.com/collect", b"v=1&tid=UA-1&cid=7c9e6679-7425-40de-944b-e07fc1f90ae7&t=event",
              {"content-type": "application/x-www-form-urlencoded"}),
        _flow("POST", "https://files.slack.com/upload/v1", multipart, {"content-type": "multipart/form-data; boundary=----B"}),
        _flow("POST", "https://telemetry.example.net/v1/metrics", pb, {"content-type": "application/x-protobuf"}),
        _flow("POST", "https://o1.ingest.sentry.io/api/1/envelope/", envelope, {"content-type": "application/x-sentry-envelope"}),
        _flow("POST", "https://api.example.com/deflate", zlib.compress(events), {"content-type": "application/json", "content-encoding": "deflate"}),
        _flow("GET", "https://zoom.us/wc/join?meeting=85012345678&name=Alice", b"", {}),
    ]  # fmt: skip
    ws = tflow.tflow(resp=True)
    ws.request.host = "rtcstats.example.net"
    ws.websocket = WebSocketData()
    ws.websocket.messages = [
        WebSocketMessage(Opcode.TEXT, True, json.dumps({"type": "getstats", "device_id": "7c9e6679"}).encode(), 1.0),
        WebSocketMessage(Opcode.BINARY, False, b"\x00" * 64, 2.0),
    ]
    flows.append(ws)
    flows.append(tflow.tflow(err=True))
    streamed = _flow("PUT", "https://upload.example.com/upload/big", multipart[:200], {"content-type": "multipart/form-data; boundary=----B"})
    streamed.metadata["egressaudit_streamed"] = {"request": {"bytes": 300 << 20, "sha256": "ab" * 32}}
    flows.append(streamed)
    return flows


@cache
def seed_states() -> tuple[dict[str, Any], ...]:
    return tuple(f.get_state() for f in seed_flows())


@cache
def seed_har() -> dict[str, Any]:
    from mitmproxy.addons.savehar import SaveHar

    return SaveHar().make_har(seed_flows())  # type: ignore[no-any-return]


# -- hostile values and bodies ----------------------------------------------------------------------------------
DEEP = "__egressaudit_deep_%d_%s__"
"""Placeholder for a value nested ``n`` deep, spliced into the serialised file (the serialisers recurse: they cannot write it)."""


def _deep(n: int, kind: str = "list") -> str:
    return DEEP % (n, kind)


def _splice_json(data: bytes) -> bytes:
    def deep(m: re.Match[bytes]) -> bytes:
        n, kind = int(m.group(1)), m.group(2)
        return (b"[" * n + b"0" + b"]" * n) if kind == b"list" else (b'{"a":' * n + b"0" + b"}" * n)

    return re.sub(rb'"__egressaudit_deep_(\d+)_(list|dict)__"', deep, data)


def tnetstring(v: Any) -> bytes:
    """mitmproxy's tnetstring encoding, written here so that it can hold what mitmproxy's writer refuses or cannot
    reach: text that is not UTF-8 (``;`` values), nesting thousands deep (the :data:`DEEP` placeholders)."""
    if isinstance(v, str):
        m = re.fullmatch(r"__egressaudit_deep_(\d+)_(list|dict)__", v)
        if m:
            x = b"1:0#"
            for _ in range(int(m.group(1))):
                x = b"%d:%s]" % (len(x), x) if m.group(2) == "list" else b"%d:1:a;%s}" % (len(x) + 4, x)
            return x
        e = v.encode("utf-8", "surrogateescape")
        return b"%d:%s;" % (len(e), e)
    if v is None:
        return b"0:~"
    if v is True:
        return b"4:true!"
    if v is False:
        return b"5:false!"
    if isinstance(v, int):
        e = str(v).encode()
        return b"%d:%s#" % (len(e), e)
    if isinstance(v, float):
        e = repr(v).encode()
        return b"%d:%s^" % (len(e), e)
    if isinstance(v, bytes):
        return b"%d:%s," % (len(v), v)
    if isinstance(v, list | tuple):
        inner = b"".join(tnetstring(x) for x in v)
        return b"%d:%s]" % (len(inner), inner)
    if isinstance(v, dict):
        inner = b"".join(tnetstring(k) + tnetstring(x) for k, x in v.items())
        return b"%d:%s}" % (len(inner), inner)
    raise TypeError(type(v).__name__)


@cache
def _bomb(codec: str) -> bytes:
    import brotli
    import zstandard

    zeros = b"\x00" * (96 << 20)  # 96 MiB decoded: past the recorder's 64 MiB ceiling
    if codec == "gzip":
        return gzip.compress(zeros, 9)
    if codec == "deflate":
        return zlib.compress(zeros, 9)
    if codec == "br":
        return brotli.compress(zeros, quality=5)  # type: ignore[no-any-return]
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(zeros)
    if codec == "gzip, br":  # a chain: gzip first, brotli around it
        return brotli.compress(gzip.compress(zeros, 9), quality=5)  # type: ignore[no-any-return]
    raise ValueError(codec)


def hostile_body(rng: random.Random) -> tuple[bytes, dict[str, str], str]:
    """(body as sent, request headers to set, a name for the summary)."""
    k = rng.randrange(16)
    n = rng.choice([100, 5_000, 20_000, 60_000])
    if k == 0:
        body = b"".join(b'--XB\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(n)) + b"--XB--\r\n"
        return body, {"content-type": "multipart/form-data; boundary=XB"}, f"multipart_crlf_{n}"
    if k == 1:
        body = b"".join(b'--XB\nContent-Disposition: form-data; name="f%d"; filename="a%d.png"\n\n\x89PNG\r\n\x1a\n\n' % (i, i) for i in range(n))
        return body, {"content-type": "multipart/form-data"}, f"multipart_lf_truncated_{n}"
    if k == 2:
        body = b"--XB\r\nContent-Disposition: form-data; name=a\r\n" * n  # headers that never end
        return body, {"content-type": "multipart/form-data; boundary=XB"}, "multipart_no_blank_line"
    if k == 3:
        return b"&".join(b"k%d=v" % i for i in range(n)), {"content-type": "application/x-www-form-urlencoded"}, f"form_{n}_keys"
    if k == 4:
        d = rng.choice([999, 1_500, 50_000])
        return b"[" * d + b"]" * d, {"content-type": "application/json"}, f"json_depth_{d}"
    if k == 5:
        d = rng.choice([20, 40, 200])
        body = b"text"
        for _ in range(d):
            body = _pb_field(1, 2, body)
        return body, {"content-type": "application/x-protobuf"}, f"protobuf_depth_{d}"
    if k == 6:
        body = b'{"event_id":"x"}\n' + b'{"type":"attachment","length":99999999999}\n' + b"abc" * n
        return body, {"content-type": "application/x-sentry-envelope"}, "sentry_lying_length"
    if k == 7:
        body = b'{"event_id":"x"}\n' + b'{"type":"event"}\n{"a":1}\n' * n
        return body, {"content-type": "application/x-sentry-envelope"}, f"sentry_{n}_items"
    if k == 8:
        codec = rng.choice(["gzip", "deflate", "br", "zstd", "gzip, br"])
        return _bomb(codec), {"content-type": "application/json", "content-encoding": codec}, f"bomb_{codec.replace(', ', '_')}"
    if k == 9:
        codec = rng.choice(["gzip", "br", "zstd"])
        whole = seed_bodies()[codec]
        return whole[: rng.randrange(1, len(whole))], {"content-type": "application/json", "content-encoding": codec}, f"truncated_{codec}"
    if k == 10:
        enc = rng.choice(["gzip", "x-\udcff", "br, br, br"])
        return b'{"a": 1}', {"content-type": "application/\udcffjson", "content-encoding": enc}, "bad_headers"
    if k == 11:
        return rng.randbytes(rng.choice([10, 1000, 100_000])), {"content-type": rng.choice(["", "application/octet-stream", "text/plain"])}, "random"
    if k == 12:
        return b"{" + b'"k":1,' * n + b'"z":{"' + b"a" * 100 + b'":1}}', {"content-type": "application/json"}, f"json_{n}_keys"
    if k == 13:
        body = b"\n".join(b'{"event":"e","n":%d}' % i for i in range(n))
        return body, {"content-type": "application/x-ndjson"}, f"ndjson_{n}_lines"
    if k == 14:
        return b"\x1f\x8b" + rng.randbytes(200), {"content-type": "application/json", "content-encoding": "gzip, gzip"}, "gzip_garbage_chain"
    return b"--XB\r\n" + b"A" * n, {"content-type": "multipart/form-data; boundary=XB"}, "multipart_cut_in_headers"


@cache
def seed_bodies() -> dict[str, bytes]:
    import brotli
    import zstandard

    doc = json.dumps({"events": [{"n": i, "device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"} for i in range(200)]}).encode()
    return {"gzip": gzip.compress(doc), "br": brotli.compress(doc), "zstd": zstandard.ZstdCompressor().compress(doc)}


def hostile_value(rng: random.Random, for_har: bool) -> tuple[Any, str]:
    k = rng.randrange(8)
    if k == 0:
        return rng.choice(HOSTILE_INTS), "huge_int"
    if k == 1:
        return rng.choice(HOSTILE_FLOATS), "inf_nan_float"
    if k == 2:
        wrong: list[Any] = [[], {}, None, True, 1.5, "x", ["a", 1]] if for_har else [[], {}, None, True, 1.5, b"x", "x", [b"a", 1]]
        return rng.choice(wrong), "wrong_type"
    if k == 3:
        return (_deep(rng.choice([200, 1_100, 3_000]), rng.choice(["list", "dict"]))), "deep_nesting"
    if k == 4:
        return ("caf\udcff\udcfe" if for_har else b"caf\xff\xfe\xc3"), "not_utf8"
    if k == 5:
        return ("\ud800x" if for_har else b"\xed\xa0\x80"), "lone_surrogate"
    if k == 6:
        return ("9999-99-99T99:99:99Z" if for_har else rng.choice(HOSTILE_INTS)), "bad_timestamp"
    return ("" if for_har else b""), "empty"


# -- mutations --------------------------------------------------------------------------------------------------
def _paths(node: Any, prefix: tuple[Any, ...] = (), out: list[tuple[Any, ...]] | None = None, depth: int = 0) -> list[tuple[Any, ...]]:
    out = [] if out is None else out
    if depth > 8:
        return out
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            _paths(v, (*prefix, k), out, depth + 1)
    elif isinstance(node, list):
        for i, v in enumerate(node[:6]):
            out.append((*prefix, i))
            _paths(v, (*prefix, i), out, depth + 1)
    return out


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


TARGETED = [  # fields the recorder reads, hit more often than a random path
    ("id",), ("request", "method"), ("request", "path"), ("request", "authority"), ("request", "host"), ("request", "headers"),
    ("request", "timestamp_start"), ("request", "port"), ("request", "content"), ("response", "status_code"), ("response", "headers"),
    ("response", "content"), ("client_conn", "peername"), ("server_conn", "peername"), ("server_conn", "sockname"), ("server_conn", "address"),
    ("metadata",),
    ("version",), ("type",), ("error",), ("websocket", "messages"),
]  # fmt: skip
HAR_TARGETED = [
    ("startedDateTime",), ("time",), ("request", "method"), ("request", "url"), ("request", "headers"), ("request", "httpVersion"),
    ("request", "postData"), ("request", "postData", "text"), ("response", "status"), ("response", "headers"), ("response", "content"),
    ("response", "content", "text"), ("response", "content", "encoding"), ("serverIPAddress",), ("response", "httpVersion"),
]  # fmt: skip


def mutate_state(rng: random.Random, states: list[dict[str, Any]], ops: list[str]) -> None:
    st = rng.choice(states)
    k = rng.randrange(4)
    if k == 0:
        path = rng.choice(TARGETED)
        if path[0] not in st or (len(path) > 1 and not isinstance(st.get(path[0]), dict)):
            path = rng.choice(_paths(st))
    elif k == 1:
        path = rng.choice(_paths(st))
    else:
        body, headers, name = hostile_body(rng)
        st["request"]["content"] = body
        hs = [h for h in st["request"]["headers"] if h[0].lower() not in (b"content-type", b"content-encoding")]
        st["request"]["headers"] = hs + [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in headers.items()]
        ops.append(f"body({name})")
        return
    value, name = hostile_value(rng, for_har=False)
    if path[-1] == "headers" and rng.random() < 0.6:  # a header whose name or value is not UTF-8
        value = [(b"content-type", b"application/\xffjson"), (b"x-\xfe", b"\xff")]
        name = "header_not_utf8"
    _set(st, path, value)
    ops.append(f"state({'.'.join(map(str, path))}={name})")


def mutate_entry(rng: random.Random, entries: list[Any], ops: list[str]) -> None:
    if not entries:
        return
    e = rng.choice(entries)
    k = rng.randrange(5)
    if k == 3 and isinstance(e.get("request"), dict):
        body, headers, name = hostile_body(rng)
        text = body.decode("utf-8", "surrogateescape")
        e["request"]["postData"] = {"mimeType": headers.get("content-type", ""), "text": text}
        e["request"]["headers"] = [{"name": k, "value": v} for k, v in headers.items() if k != "content-encoding"]
        ops.append(f"postData({name})")
        return
    if k == 4 and isinstance(e.get("request"), dict):
        n = rng.choice([2_000, 50_000, 200_000])
        e["request"]["url"] = "https://api2.amplitude.com/2/httpapi?" + "&".join(f"k{i}=v" for i in range(n))
        ops.append(f"url({n}_query_keys)")
        return
    path = rng.choice(HAR_TARGETED) if k < 2 else rng.choice(_paths(e) or [("x",)])
    try:
        value, name = hostile_value(rng, for_har=True)
        _set(e, path, value)
    except (KeyError, IndexError, TypeError):
        e[path[0]] = None
        name = "missing"
    ops.append(f"entry({'.'.join(map(str, path))}={name})")


def _boundaries(data: bytes) -> list[int]:
    """Where each top-level tnetstring of a .mitm file ends."""
    out, pos = [], 0
    while pos < len(data):
        colon = data.find(b":", pos)
        if colon < 0 or not data[pos:colon].isdigit():
            break
        pos = colon + 1 + int(data[pos:colon]) + 1
        out.append(pos)
    return out


def mutate_mitm_bytes(rng: random.Random, data: bytes, ops: list[str]) -> bytes:
    k = rng.randrange(7)
    bounds = _boundaries(data) or [len(data)]
    if k == 0:  # a length prefix that lies
        prefixes = [m.start() for m in re.finditer(rb"(?<![0-9])[0-9]{1,9}:", data[:200_000])]
        at = rng.choice(prefixes) if prefixes else 0
        end = data.find(b":", at)
        n = int(data[at:end] or b"0")
        new = rng.choice([n + rng.randrange(1, 50), max(0, n - rng.randrange(1, 50)), 10**10 + 7, 99_999_999_999, n * 1000])
        ops.append("lying_length")
        return data[:at] + str(new).encode() + data[end:]
    if k == 1:  # cut at or near a record boundary
        b = rng.choice([0, *bounds])
        cut = max(0, min(len(data), b + rng.choice([-2, -1, 0, 0, 1, 2, 7])))
        ops.append("cut_at_boundary")
        return data[:cut]
    if k == 2:
        cut = rng.randrange(0, len(data) + 1)
        ops.append("cut_anywhere")
        return data[:cut]
    if k == 3:
        b = rng.choice(bounds)
        ops.append("garbage_between_records")
        return data[:b] + rng.choice([b"\n", b"garbage", b"0:", b"5:abc", rng.randbytes(16), b"3:abc!"]) + data[b:]
    if k == 4:
        buf = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            i = rng.randrange(len(buf)) if buf else 0
            if buf:
                buf[i] = rng.randrange(256)
        ops.append("flip_bytes")
        return bytes(buf)
    if k == 5:
        ops.append("whole_file")
        return rng.choice([b"", b"0:~", b"0:}", b"2:{}", b"12345678901:abcd", b"5:hello,", b"  \n", b"\xef\xbb\xbf", b"0:]" * 1000])
    ops.append("type_tag")
    b = rng.choice(bounds)
    return data[: b - 1] + rng.choice([b"]", b",", b"x", b"\x00"]) + data[b:] if b > 0 else data


def mutate_har_bytes(rng: random.Random, data: bytes, ops: list[str]) -> bytes:
    k = rng.randrange(5)
    if k == 0:  # raw bytes that are not UTF-8 inside a string
        quotes = [m.start() for m in re.finditer(rb'"', data[:200_000])]
        at = rng.choice(quotes) + 1 if quotes else 0
        ops.append("raw_not_utf8")
        return data[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xfe\xff"]) + data[at:]
    if k == 1:
        starts = [m.start() for m in re.finditer(rb'\{"startedDateTime"|\{\s*"_', data)] or [len(data) // 2]
        cut = max(0, rng.choice(starts) + rng.choice([-3, -1, 0, 1, 5, 100]))
        ops.append("cut_at_entry")
        return data[:cut]
    if k == 2:
        ops.append("cut_anywhere")
        return data[: rng.randrange(0, len(data) + 1)]
    if k == 3:
        ops.append("whole_file")
        return rng.choice(
            [b"", b"{}", b"[]", b'{"log": {}}', b'{"log": {"entries": {}}}', b'{"log": {"entries": []}}', b"{" * 5000, b'{"log": 5}',
             b"\xef\xbb\xbf{", b'{"log": {"entries": [1, "x", null, []]}}', b'{"log": {"entries": [' + b"[" * 3000]
        )  # fmt: skip
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    ops.append("flip_bytes")
    return bytes(buf)


def make_case(rng: random.Random) -> tuple[bytes, str, list[str]]:
    """(file bytes, suffix, mutations applied)."""
    ops: list[str] = []
    n_ops = rng.choice([1, 1, 2, 3])
    if rng.random() < 0.55:
        states = [copy.deepcopy(s) for s in rng.sample(seed_states(), rng.randrange(2, len(seed_states()) + 1))]
        byte_ops = 0
        for _ in range(n_ops):
            if rng.random() < 0.7:
                mutate_state(rng, states, ops)
            else:
                byte_ops += 1
        data = b"".join(tnetstring(st) for st in states)
        for _ in range(byte_ops):
            data = mutate_mitm_bytes(rng, data, ops)
        return data, ".mitm", ops
    har = copy.deepcopy(seed_har())
    entries = har["log"]["entries"]
    rng.shuffle(entries)
    del entries[rng.randrange(1, len(entries) + 1) :]
    byte_ops = 0
    for _ in range(n_ops):
        if rng.random() < 0.7:
            mutate_entry(rng, entries, ops)
        else:
            byte_ops += 1
    data = _splice_json(json.dumps(har).encode())
    for _ in range(byte_ops):
        data = mutate_har_bytes(rng, data, ops)
    return data, ".har", ops


# -- running ----------------------------------------------------------------------------------------------------
def run_subprocess(case: Path, out: Path, home: Path) -> Outcome:
    return run_command(["analyze", str(case), "--out", str(out), "--quiet"], home)


def run(work_dir: Path, cases: int, seed: int, subprocess_every: int = 50, report_every: int = 10, only: int | None = None) -> dict[str, Any]:
    """``cases`` hostile HAR/.mitm files through ``egressaudit analyze`` then ``inventory``/``har``; a JSON-able summary."""
    work_dir.mkdir(parents=True, exist_ok=True)
    crashes = work_dir / "crashes"
    home = work_dir / "home"
    home.mkdir(exist_ok=True)
    exit_codes: Counter[str] = Counter()
    follow: dict[str, Counter[str]] = {"inventory": Counter(), "har": Counter(), "report": Counter()}
    causes: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    ops_count: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    sub_codes: Counter[str] = Counter()
    sub_disagree = multi_line = flows_kept = 0
    reproducers: list[str] = []
    slowest = (0.0, "")
    successes = 0
    t0 = time.perf_counter()
    indexes = [only] if only is not None else list(range(cases))
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="run-") as tmp:
        t = Path(tmp)
        for i in indexes:
            rng = random.Random(seed * 1_000_003 + i)
            data, suffix, ops = make_case(rng)
            ops_count.update(re.sub(r"[=(].*", "", op) for op in ops)
            case = (work_dir if only is not None else t) / f"case-{seed}-{i}{suffix}"
            case.write_bytes(data)
            out = t / f"out-{i}"
            c0 = time.perf_counter()
            o = invoke(["analyze", str(case), "--out", str(out), "--quiet"])
            took = time.perf_counter() - c0
            outcomes = [("analyze", o)]
            exit_codes[str(o.exit_code)] += 1
            if o.exit_code not in (0, 1):
                messages[message(o.output, case)] += 1
            if o.exit_code == 0:
                successes += 1
                try:
                    session = json.loads((out / "session.json").read_text())["http"]
                except (OSError, ValueError, KeyError):
                    session = {}
                skipped.update({k: v for k, v in (session.get("skipped") or {}).items() if isinstance(v, int)})
                problems.update({k: v for k, v in (session.get("problems") or {}).items() if isinstance(v, int)})
                flows_kept += int(session.get("exchanges") or 0)
                cmds = {"inventory": ["inventory", str(out), "--all", "--category", "any"], "har": ["har", str(out), "--out", str(t / "x.har")]}
                if report_every and successes % report_every == 0:
                    cmds["report"] = ["report", str(out)]
                for name, args in cmds.items():
                    f = invoke(args)
                    follow[name][str(f.exit_code)] += 1
                    outcomes.append((name, f))
            if took > slowest[0]:
                slowest = (took, f"case {i} ({suffix}: {', '.join(ops)}; {len(data):,} bytes)")
            for name, oc in outcomes:
                if oc.traceback or oc.exit_code == 1:
                    causes[f"{name}: {oc.traceback or 'exit 1'}"] += 1
                    crashes.mkdir(exist_ok=True)
                    kept = crashes / case.name
                    shutil.copyfile(case, kept)
                    if len(reproducers) < 50:
                        reproducers.append(f"{kept} ({suffix}: {', '.join(ops)}): {name}: {oc.traceback}")
            if subprocess_every and i % subprocess_every == 0:
                s = run_subprocess(case, t / f"sub-{i}", home)
                sub_codes[str(s.exit_code)] += 1
                if s.traceback:
                    causes[f"(subprocess) analyze: {s.traceback}"] += 1
                if s.exit_code != o.exit_code:
                    sub_disagree += 1
                if s.exit_code != 0 and len([ln for ln in s.output.splitlines() if ln.strip()]) != 1:
                    multi_line += 1
                shutil.rmtree(t / f"sub-{i}", ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            if only is None:
                case.unlink()
    return {
        "target": "hostile_http",
        "inputs": len(indexes),
        "seed": seed,
        "exit_codes": dict(sorted(exit_codes.items())),
        "tracebacks": sum(causes.values()),
        "causes": dict(causes.most_common()),
        "followups": {k: dict(sorted(v.items())) for k, v in follow.items()},
        "failure_messages": dict(messages.most_common(20)),
        "seconds": round(time.perf_counter() - t0, 1),
        "exchanges_recorded": flows_kept,
        "skipped": dict(sorted(skipped.items())),
        "problems": dict(sorted(problems.items())),
        "mutations": dict(sorted(ops_count.items())),
        "slowest_case": {"seconds": round(slowest[0], 3), "case": slowest[1]},
        "subprocess": {
            "cases": sum(sub_codes.values()),
            "exit_codes": dict(sorted(sub_codes.items())),
            "exit_code_differs_from_in_process": sub_disagree,
            "failures_not_one_line": multi_line,
        },
        "reproducers": reproducers,
    }


def main(argv: list[str] | None = None, runner: Callable[..., dict[str, Any]] = run) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--subprocess-every", type=int, default=50, help="also run every N-th case as a real subprocess (0: never)")
    ap.add_argument("--report-every", type=int, default=10, help="run `egressaudit report` on every N-th readable case (0: never)")
    ap.add_argument("--case", type=int, default=None, help="run only this case (kept in WORK)")
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="hostile-http-"))
    print(json.dumps(runner(work, a.cases, a.seed, a.subprocess_every, a.report_every, a.case), indent=2))


if __name__ == "__main__":
    main()
