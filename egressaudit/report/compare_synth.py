"""Made-up session folders, many of them, for testing and measuring ``egressaudit compare`` at scale.

Shipped with the package (as mitmproxy ships ``tflow``): the tests, the benchmark (``benchmarks/run.py --only
compare``) and anyone trying the engines on a laptop make the same sessions.  Every table is built from the schema
(:mod:`egressaudit.schema`, through :func:`egressaudit.schema.to_table`) and written with the session package's own
writers, so the folders are what ``egressaudit analyze`` writes, in shape: flows, HTTP rows, fields, markers and
media streams, with a manifest.  What is in them is invented and deterministic (``seed``):

* vendors ``zoom``, ``microsoft`` and ``cisco`` in turn, and, from four sessions on, one session of ``jitsi`` (a
  vendor with a single session);
* calls of 10 to 30 minutes: joining, talking, muted (from 40% to 60% of the call), unmuted, camera-off, left;
* flows to each vendor's media, signalling and telemetry hosts, DNS to the local resolver, and the third parties a
  vendor's client is known to call (Google Analytics, Crittercism, Pushwoosh); one media flow's stream rows stop
  while muted;
* HTTP rows (telemetry, signalling, one content upload), and identifying fields (an e-mail, a device id) in some
  telemetry bodies.

The addresses are public ones of the vendors' networks, so the offline country and operator data answers for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egressaudit.schema import to_table
from egressaudit.session import private_dir, write_session_json, write_table


@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    vendor: str
    party: str
    category: str


_VENDORS: dict[str, list[Host]] = {
    "zoom": [
        Host("zoomgov.zoom.us", "170.114.10.77", "zoom", "first", "media"),
        Host("us05web.zoom.us", "170.114.52.2", "zoom", "first", "signaling"),
        Host("log.zoom.us", "3.235.82.100", "zoom", "first", "telemetry"),
        Host("www.googletagmanager.com", "142.250.74.72", "google", "third", "telemetry"),
    ],
    "microsoft": [
        Host("worldaz.relay.teams.microsoft.com", "52.112.0.10", "microsoft", "first", "media"),
        Host("teams.microsoft.com", "52.113.194.132", "microsoft", "first", "signaling"),
        Host("mobile.pipe.aria.microsoft.com", "13.89.178.26", "microsoft", "first", "telemetry"),
        Host("login.microsoftonline.com", "20.190.160.1", "microsoft", "first", "auth"),
    ],
    "cisco": [
        Host("media.webex.com", "62.109.225.20", "cisco", "first", "media"),
        Host("wdm-a.wbx2.com", "66.114.160.5", "cisco", "first", "signaling"),
        Host("ssl.google-analytics.com", "142.250.185.8", "google", "third", "telemetry"),
        Host("api.crittercism.com", "54.84.80.10", "crittercism", "third", "telemetry"),
        Host("cp.pushwoosh.com", "88.99.118.26", "pushwoosh", "third", "telemetry"),
    ],
    "jitsi": [
        Host("meet.jit.si", "144.76.14.17", "jitsi", "first", "media"),
        Host("web.meet.jit.si", "144.76.14.18", "jitsi", "first", "signaling"),
        Host("stats.jitsi.net", "144.76.14.19", "jitsi", "first", "telemetry"),
    ],
}
_DATA_CLASS = {"media": "customer_content", "content_upload": "customer_content", "telemetry": "service_generated", "signaling": "service_operation",
               "auth": "service_operation", "dns": "service_operation"}  # fmt: skip
LOCAL = "192.168.7.20"
RESOLVER = "192.168.7.1"
BASE_US = 1_793_000_000 * 1_000_000  # 2026-10-26, a Monday


def _client(i: int, n: int) -> str:
    if n >= 4 and i == n - 1:
        return "jitsi"
    return ("zoom", "microsoft", "cisco")[i % 3]


def synthetic_sessions(
    out: str | Path, sessions: int = 30, *, flows: int = 200, http: int = 200, seed: int = 0, streams: bool = True
) -> list[Path]:
    """Write ``sessions`` session folders into ``out`` (``<client>-<number>``), each with about ``flows`` flows and
    ``http`` HTTP rows; their paths."""
    root = Path(out)
    private_dir(root)
    rng = np.random.default_rng(seed)
    return [_session(root, i, _client(i, sessions), flows, http, rng, streams) for i in range(sessions)]


def _session(root: Path, i: int, client: str, n_flows: int, n_http: int, rng: np.random.Generator, streams: bool) -> Path:
    sid = f"{client}-{i:04d}"
    folder = root / sid
    private_dir(folder)
    minutes = float(rng.uniform(10, 30))
    t0 = BASE_US + i * 3_600_000_000
    length = int(minutes * 60e6)
    hosts = _VENDORS[client]
    # flows: a quarter DNS to the local resolver, the rest to the vendor's hosts and third parties, media first
    n_dns = n_flows // 4
    n_remote = n_flows - n_dns
    pick = rng.integers(0, len(hosts), n_remote)
    pick[: min(4, n_remote)] = 0  # (the call's media flows)
    start = rng.integers(t0, t0 + length, n_flows)
    start[: min(4, n_remote)] = t0 + rng.integers(0, 5_000_000, min(4, n_remote))
    dur = rng.integers(50_000, 30_000_000, n_flows)
    remote = [hosts[k] for k in pick]
    is_media = np.array([h.category == "media" for h in remote] + [False] * n_dns)
    dur[: len(remote)][is_media[: len(remote)]] = np.maximum(length - (start[: len(remote)][is_media[: len(remote)]] - t0) - 1_000_000, 1_000_000)
    end = start + dur
    bytes_out = np.where(is_media, rng.integers(2_000_000, 40_000_000, n_flows), rng.integers(200, 60_000, n_flows))
    cats = [h.category for h in remote] + ["dns"] * n_dns
    flows = {
        "session_id": [sid] * n_flows, "flow_id": list(range(n_flows)),
        "transport": ["udp" if c in ("media", "dns") else "tcp" for c in cats], "ip_version": [4] * n_flows,
        "local_ip": [LOCAL] * n_flows, "local_port": rng.integers(40_000, 60_000, n_flows).tolist(),
        "remote_ip": [h.ip for h in remote] + [RESOLVER] * n_dns,
        "remote_port": [8801 if c == "media" else 53 if c == "dns" else 443 for c in cats],
        "is_local": [False] * n_remote + [True] * n_dns,
        "bytes_out": bytes_out.tolist(), "bytes_in": (bytes_out * 2).tolist(),
        "packets_out": (bytes_out // 500 + 1).tolist(), "packets_in": (bytes_out // 400 + 1).tolist(),
        "payload_bytes_out": (bytes_out * 9 // 10).tolist(), "payload_bytes_in": (bytes_out * 18 // 10).tolist(),
        "ts_start": start.tolist(), "ts_end": end.tolist(), "duration_s": (dur / 1e6).tolist(), "fragments": [0] * n_flows,
        "hostname": [h.name for h in remote] + [hosts[int(k)].name for k in rng.integers(0, len(hosts), n_dns)],
        "hostname_source": ["tls_sni" if c not in ("media", "dns") else "dns" for c in cats],
        "stun_packets": [0] * n_flows, "rtp_packets": [50 if c == "media" else 0 for c in cats], "rtcp_packets": [0] * n_flows,
        "dtls_packets": [0] * n_flows, "ssrc_count": [1 if c == "media" else 0 for c in cats],
        "vendor": [h.vendor for h in remote] + [None] * n_dns, "party": [h.party for h in remote] + ["unknown"] * n_dns,
        "category": cats, "data_class": [_DATA_CLASS[c] for c in cats], "rule": [f"synthetic/{c}" for c in cats],
        "evidence": ["made up by egressaudit.report.compare_synth"] * n_flows, "attributed_by": ["none"] * n_flows,
    }  # fmt: skip
    order = np.argsort(start, kind="stable")  # (flow ids in order of first packet, as analyze numbers them)
    flows = {k: (v if k == "flow_id" else [v[j] for j in order]) for k, v in flows.items()}
    media_flow = int(np.flatnonzero(order == 0)[0])
    write_table(folder, "flows", to_table("flows", flows))
    # markers: the script every session follows
    marks = [("joining", 0.0), ("talking", 0.05), ("muted", 0.4), ("unmuted", 0.6), ("camera-off", 0.8), ("left", 0.98)]
    markers: dict[str, list[Any]] = {"session_id": [sid] * len(marks), "ts": [t0 + int(f * length) for _, f in marks], "state": [m for m, _ in marks],
               "source": ["lab"] * len(marks)}  # fmt: skip
    write_table(folder, "markers", to_table("markers", markers))
    if streams:
        # the first media flow's seconds, none while muted (its audio sender stopped)
        secs = np.arange(int(start[0] // 1_000_000) + 1, int(end[0] // 1_000_000), dtype=np.int64)
        mute_a, mute_b = (t0 + 0.4 * length) / 1e6, (t0 + 0.6 * length) / 1e6
        secs = secs[(secs < mute_a) | (secs >= mute_b)]
        per = int(bytes_out[0] // max(len(secs), 1))
        n = len(secs)
        st: dict[str, list[Any]] = {
              "session_id": [sid] * n, "flow_id": [media_flow] * n, "ts": (secs * 1_000_000).tolist(), "direction": ["out"] * n, "kind": ["rtp"] * n,
              "ssrc": [1234] * n, "payload_type": [111] * n, "packets": [50] * n, "bytes": [per] * n, "payload_bytes": [per * 9 // 10] * n,
              "marker_packets": [0] * n}  # fmt: skip
        write_table(folder, "streams", to_table("streams", st))
    # HTTP: telemetry to the vendor's telemetry hosts, signalling, one content upload
    web = [h for h in hosts if h.category in ("telemetry", "signaling", "auth")]
    hk = rng.integers(0, len(web), n_http)
    hs = [web[k] for k in hk]
    cats_h = [h.category for h in hs]
    cats_h[-1] = "content_upload"  # (to the vendor's own signalling host)
    hs[-1] = next(h for h in hosts if h.category == "signaling")
    hts = np.sort(rng.integers(t0, t0 + length, n_http))
    hb = rng.integers(300, 8_000, n_http)
    hb[-1] = 2_000_000
    ex = [f"{sid}-x{j}" for j in range(n_http)]
    httpd = {
        "session_id": [sid] * n_http, "exchange_id": ex, "kind": ["http"] * n_http, "ts_start": hts.tolist(), "ts_end": (hts + 80_000).tolist(),
        "remote_ip": [h.ip for h in hs], "remote_port": [443] * n_http, "host": [h.name for h in hs], "scheme": ["https"] * n_http,
        "method": ["POST"] * n_http, "path": ["/v1/events"] * n_http, "status": [200] * n_http, "direction": ["out"] * n_http,
        "bytes_out": hb.tolist(), "body_bytes_out": (hb - 200).tolist(), "bytes_in": [300] * n_http, "body_bytes_in": [100] * n_http,
        "field_count": [4] * n_http, "identifier_fields": [1] * n_http, "vendor": [h.vendor for h in hs], "party": [h.party for h in hs],
        "category": cats_h, "data_class": [_DATA_CLASS[c] for c in cats_h], "rule": [f"synthetic/{c}" for c in cats_h],
        "evidence": ["made up by egressaudit.report.compare_synth"] * n_http, "attributed_by": ["none"] * n_http,
    }  # fmt: skip
    write_table(folder, "http", to_table("http", httpd))
    tel = [j for j, c in enumerate(cats_h) if c == "telemetry"][:20]
    names = ("session_id", "exchange_id", "host", "vendor", "category", "key_path", "value_type", "count", "detectors", "value_hash")
    fields: dict[str, list[Any]] = {name: [] for name in names}
    for j in tel:
        for key, det in (("user.email", ["email"]), ("device.id", ["device_id", "uuid"]), ("event.name", [])):
            if det and det[0] == "email" and client == "microsoft":
                continue  # (one vendor sends no e-mail: the comparison shows the difference)
            for col, v in (("session_id", sid), ("exchange_id", ex[j]), ("host", hs[j].name), ("vendor", hs[j].vendor), ("category", "telemetry"),
                           ("key_path", key), ("value_type", "string"), ("count", 1), ("detectors", det), ("value_hash", f"h{j % 7}")):  # fmt: skip
                fields[col].append(v)
    write_table(folder, "fields", to_table("fields", fields))
    write_session_json(
        folder,
        {"session_id": sid, "label": f"synthetic {client} call {i}", "audited_client": client, "audited_client_source": "option",
         "local_hosts": [LOCAL], "local_nets": ["192.168.7.0/24"]},
        {"version": "synthetic"},
    )  # fmt: skip
    return folder


def client_of(paths: Sequence[Path]) -> dict[str, str]:
    """Session id -> client, of folders this module wrote (their names say it)."""
    return {p.name: p.name.rsplit("-", 1)[0] for p in paths}
