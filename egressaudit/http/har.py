"""HAR 1.2 export of a session's HTTP exchanges.

Without bodies (the default) the HAR is built from ``http.parquet``: methods,
URLs (query values redacted as recorded), status, content types and sizes, and
egressaudit's verdict per entry under ``_egressaudit``.  With ``--bodies`` it
is built by mitmproxy's own HAR exporter from ``flows.mitm``, which exists
only when the session was recorded with ``--keep-bodies``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from egressaudit import __version__
from egressaudit.errors import InputError
from egressaudit.session import atomic_write
from egressaudit.session.store import TableUnreadable, read_rows_checked


class HarError(InputError):
    """The HAR cannot be produced; one line for the user."""


DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _url(r: dict[str, Any]) -> str:
    """The request's URL: its host (or the address connected to) with the port when it is not the scheme's default.

    The port is ``remote_port``, the port the proxy connected to; through an upstream proxy that is the upstream
    proxy's port (the table keeps no other).
    """
    scheme = r["scheme"] or "http"
    host = r["host"] or r["remote_ip"] or ""
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    port = r["remote_port"]
    authority = host if port is None or port == DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{scheme}://{authority}{r['path'] or ''}"


def _entry(r: dict[str, Any]) -> dict[str, Any]:
    ts = r["ts_start"]
    started = ts if isinstance(ts, datetime) else datetime.fromtimestamp(0, UTC)
    end = r["ts_end"]
    elapsed = max(0.0, (end - started).total_seconds() * 1000) if isinstance(end, datetime) and isinstance(ts, datetime) else 0
    return {
        "startedDateTime": started.isoformat(),
        "time": elapsed,
        "request": {
            "method": r["method"] or "WEBSOCKET",
            "url": _url(r),
            "httpVersion": r["http_version"] or "",
            "cookies": [],
            "headers": [],
            "queryString": [],
            "headersSize": -1,
            "bodySize": r["body_bytes_out"],
            **({"postData": {"mimeType": r["content_type_out"] or "", "text": ""}} if r["body_bytes_out"] else {}),
        },
        "response": {
            "status": r["status"] or 0,
            "statusText": "",
            "httpVersion": r["http_version"] or "",
            "cookies": [],
            "headers": [],
            "content": {"size": r["decoded_bytes_in"] or 0, "mimeType": r["content_type_in"] or ""},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": r["body_bytes_in"],
        },
        "cache": {},
        "timings": {"send": 0, "wait": elapsed, "receive": 0},
        "serverIPAddress": r["remote_ip"] or "",
        "_egressaudit": {
            k: r[k] for k in ("kind", "direction", "vendor", "service", "party", "category", "data_class", "rule", "body_format", "community_id")
        },
    }


def _har_with_bodies(mitm: Path) -> dict[str, Any]:
    """mitmproxy's HAR of the kept flows, flow by flow: a flow its exporter fails on is left out and counted."""
    from mitmproxy.addons.savehar import SaveHar

    from egressaudit.http.recorder import FlowFileError, read_flow_file

    saver = SaveHar()
    entries: list[Any] = []
    failed = 0
    if mitm.stat().st_size:  # (empty: the proxy kept bodies but saw no exchange)
        try:
            for flow in read_flow_file(mitm):
                try:
                    entries += saver.make_har([flow])["log"]["entries"]
                except Exception:  # a flow mitmproxy cannot export (a timestamp past year 9999, ...)
                    failed += 1
        except FlowFileError as e:
            raise HarError(str(e)) from None
    har: dict[str, Any] = saver.make_har([])
    har["log"]["entries"] = entries
    if failed:
        har["log"]["comment"] = f"{failed} flows could not be exported"
    return har


def export_har(session_dir: Path, out: Path, bodies: bool = False) -> int:
    """Write the HAR file; returns the number of entries."""
    if not session_dir.is_dir():
        raise HarError(f"{session_dir}: not a folder")
    if bodies:
        mitm = session_dir / "flows.mitm"
        if not mitm.exists():
            raise HarError(f"{session_dir}: no bodies were kept (record with --keep-bodies to export them)")
        har = _har_with_bodies(mitm)
    else:
        if not (session_dir / "http.parquet").exists() and not (session_dir / ".parts" / "http").is_dir():
            raise HarError(f"{session_dir}: no http.parquet (record with `egressaudit proxy` or analyze .mitm/.har files)")
        try:
            rows = read_rows_checked(session_dir, "http").to_pylist()
        except TableUnreadable as e:
            raise HarError(str(e)) from None
        har = {
            "log": {
                "version": "1.2",
                "creator": {"name": "egressaudit", "version": __version__, "comment": "bodies omitted; query values redacted"},
                "pages": [],
                "entries": [_entry(r) for r in rows if r["kind"] == "http"],
            }
        }
    text = json.dumps(har, indent=1, default=str)
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return len(har["log"]["entries"])
