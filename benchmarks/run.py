"""egressaudit benchmarks: offline ingest, live capture, pcapng writer, report time, proxy overhead, session footprint.

    python benchmarks/run.py                       # everything, full size (2M packets, 60 s per capture rate)
    python benchmarks/run.py --quick               # 300k packets, 5 s per capture rate
    python benchmarks/run.py --only ingest --packets 2000000
    python benchmarks/run.py --only capture --rates 10000,50000,100000,200000 --duration 60
    python benchmarks/run.py --only proxy --profile    # mitmdump with and without the addon; cProfile of the addon
    python benchmarks/run.py --only session            # session start's CPU/RSS in a replayed call vs tcpdump; finalising 1 h
    python benchmarks/run.py --only compare            # egressaudit compare over 1,000 made-up sessions, DuckDB and Dask (compare_bench.py)

Prints a table per part (rich) and refreshes benchmarks/RESULTS.md (machine, versions,
command, results) from benchmarks/results.json, where each part's last run is kept.
Not part of the test run.  Every packet the live-capture part sends goes to 127.0.0.1
on the loopback interface; live capture needs root (or CAP_NET_RAW).

The proxy part sends telemetry-sized POSTs (2-8 KB JSON, most gzip-encoded) to real vendor
host names through mitmdump on 127.0.0.1, (a) with only tests/support/redirect_addon.py
(every upstream connection goes to a local HTTPS sink on 127.0.0.1, any other is refused)
and (b) with addons/egressaudit_addon.py as well, and (c) straight to the sink as a floor.
Each round starts a fresh mitmdump per configuration; (c), (a) and (b) then send the same
requests in interleaved blocks (--proxy-block) with quiet gaps, over --proxy-rounds rounds,
and each (b) session folder must hold one http row per request after SIGINT.

Each part's results are merged into results.json when that part ends (re-read first), so
runs of different parts at the same time do not overwrite each other's results.

The session part replays a recorded 1:1 WebRTC call (captures/janus-echo/call.pcapng) with tcpreplay from inside a
network namespace of its own onto a veth pair whose host end `egressaudit session start -i` (and, in turn, a plain
tcpdump) captures on: CPU time summed over the session's process tree and its peak RSS, for the call at its own timing
(and sped up), and idle.  Then an hour's worth of the call's packets goes through a fresh session at a fixed rate and
SIGINT to exit is timed, against tshark and NFStream reading the same capture.pcapng.  Nothing is routed: the frames end
at the far end of the pair, which is deleted afterwards (also on failure).  Needs root.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
PUBLIC = ROOT.parent / "shared" / "captures" / "public"
if not PUBLIC.is_dir():
    PUBLIC = Path("/work/shared/captures/public")
sys.path.insert(0, str(ROOT))

console = Console()


# -- measuring a subprocess ------------------------------------------------------------
def measure(cmd: list[str], timeout: float = 3600, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall time and peak RSS of its whole process tree (psutil, polled every 20 ms)."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:  # files, not pipes: a full pipe would stall the tool
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=cwd)
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            rss = 0
            try:
                for p in [ps, *ps.children(recursive=True)]:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            peak = max(peak, rss)
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return {
        "wall_s": wall,
        "peak_rss_mb": peak / 2**20,
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace"),
    }


# -- the large capture -------------------------------------------------------------------
PCAP_HDR = struct.Struct("<IHHiIII")
PCAP_REC = struct.Struct("<IIII")


def _template() -> list[tuple[float, bytes, int]]:
    """Every Ethernet frame of the public captures: (relative time, frame without Ethernet padding, IP offset or -1).

    Each file's time gaps are clipped to 1 s (some of these captures have anonymised,
    years-apart timestamps) and the files are laid end to end.
    """
    from egressaudit.capture.frames import LINKTYPE_ETHERNET, link_payload
    from egressaudit.capture.reader import CaptureError, ReadStats, iter_frames

    out: list[tuple[float, bytes, int]] = []
    t = 0.0
    for p in sorted(PUBLIC.rglob("*")):
        if not p.is_file() or p.suffix not in (".pcap", ".pcapng"):
            continue
        try:
            frames = list(iter_frames(p, ReadStats(path=str(p))))
        except CaptureError:
            continue
        prev = None
        for f in frames:
            if f.linktype != LINKTYPE_ETHERNET:
                continue
            gap = 0.0 if prev is None else min(max(f.ts - prev, 0.0), 1.0)
            prev = f.ts
            t += gap
            data = f.data
            r = link_payload(f.linktype, data)
            off = -1
            if not isinstance(r, str):
                off = r[0]
                v = data[off] >> 4 if off < len(data) else 0
                if v == 4 and off + 4 <= len(data):
                    total = struct.unpack_from("!H", data, off + 2)[0]
                    if total >= 20 and off + total < len(data):
                        data = data[: off + total]  # drop Ethernet padding: frame length = link header + IP length
                elif v == 6 and off + 40 <= len(data):
                    plen = struct.unpack_from("!H", data, off + 4)[0]
                    if plen and off + 40 + plen < len(data):
                        data = data[: off + 40 + plen]
                else:
                    off = -1
            out.append((t, data, off))
        t += 0.01
    return out


def _mutate(data: bytes, off: int, k: int) -> bytes:
    """Copy ``k`` of a frame: two bytes of both IP addresses XOR-ed with k (a bijection, so flows stay flows)."""
    if off < 0 or k == 0:
        return data
    b = bytearray(data)
    hi, lo = (k >> 8) & 0xFF, k & 0xFF
    if b[off] >> 4 == 4:
        for a in (off + 13, off + 17):
            b[a] ^= hi
            b[a + 1] ^= lo
    else:
        for a in (off + 12, off + 28):
            b[a] ^= hi
            b[a + 1] ^= lo
    return bytes(b)


def build_capture(packets: int) -> Path:
    """A pcap of ``packets`` frames: overlapping copies of the public captures (shifted addresses and times); cached."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"large-{packets}.pcap"
    if path.exists():
        return path
    tpl = _template()
    if not tpl:
        raise SystemExit(f"no captures under {PUBLIC}")
    copies = -(-packets // len(tpl))
    step = 0.25  # seconds between the starts of consecutive copies: many copies are live at once
    base = 1_700_000_000.0

    def copy(k: int) -> Iterator[tuple[float, int, int]]:
        off = base + k * step
        for i, (t, _, _) in enumerate(tpl):
            yield (off + t, k, i)

    tmp = path.with_suffix(".tmp")
    n = 0
    with open(tmp, "wb", buffering=1 << 22) as f:
        f.write(PCAP_HDR.pack(0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for ts, k, i in heapq.merge(*(copy(k) for k in range(copies))):
            _, data, ipoff = tpl[i]
            d = _mutate(data, ipoff, k)
            us = round(ts * 1e6)
            f.write(PCAP_REC.pack(us // 1_000_000, us % 1_000_000, len(d), len(d)))
            f.write(d)
            n += 1
            if n >= packets:
                break
    tmp.rename(path)
    return path


# -- ingest ------------------------------------------------------------------------------
NFSTREAM_SCRIPT = """
import sys
from nfstream import NFStreamer
n = p = b = 0
for f in NFStreamer(source=sys.argv[1], n_meters=1, statistical_analysis=False, n_dissections=0):
    n += 1; p += f.bidirectional_packets; b += f.bidirectional_bytes
print(n, p, b)
"""

SCAPY_SCRIPT = """
import sys
from scapy.utils import PcapReader
limit = int(sys.argv[2]); n = 0
with PcapReader(sys.argv[1]) as r:
    for pkt in r:
        pkt.summary()
        n += 1
        if n >= limit:
            break
print(n)
"""


def _tshark_flows(path: Path) -> dict[tuple[str, frozenset[tuple[str, int]]], list[int]]:
    """tshark's TCP and UDP streams (its conversation identities): key -> [frames, IP bytes, streams].

    Tunnelled frames (GTP-U, IP-in-IP) count as their innermost conversation and IP length, as egressaudit (and nDPI)
    count them: every field is its last occurrence, and the innermost IP layer is the later of ip/ipv6 in
    frame.protocols."""
    cmd = ["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=l", "-e", "frame.protocols", "-e", "ip.src", "-e", "ip.dst",
           "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "udp.stream",
           "-e", "udp.srcport", "-e", "udp.dstport", "-e", "icmp.type", "-e", "icmpv6.type", "-e", "ip.len", "-e", "ipv6.plen"]  # fmt: skip
    streams: dict[tuple[str, int], list[Any]] = {}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as p:
        assert p.stdout is not None
        for line in p.stdout:
            c = line.rstrip("\n").split("\t")
            if c[11] or c[12]:
                continue  # ICMP (its quoted header may carry a UDP/TCP stream id)
            chain = f":{c[0]}:"
            v6 = chain.rfind(":ipv6:") > chain.rfind(":ip:")
            src, dst = (c[3], c[4]) if v6 else (c[1], c[2])
            if c[5]:
                key = ("tcp", int(c[5]))
                a, b = (src, int(c[6])), (dst, int(c[7]))
            elif c[8]:
                key = ("udp", int(c[8]))
                a, b = (src, int(c[9])), (dst, int(c[10]))
            else:
                continue
            ip_bytes = 40 + int(c[14]) if v6 else int(c[13])
            s = streams.get(key)
            if s is None:
                streams[key] = [frozenset((a, b)), 1, ip_bytes]
            else:
                s[1] += 1
                s[2] += ip_bytes
    flows: dict[tuple[str, frozenset[tuple[str, int]]], list[int]] = defaultdict(lambda: [0, 0, 0])
    for (proto, _), (ends, n, nb) in streams.items():
        f = flows[(proto, ends)]
        f[0] += n
        f[1] += nb
        f[2] += 1
    return flows


def agreement(session_dir: Path, path: Path) -> dict[str, Any]:
    import pandas as pd

    df = pd.read_parquet(session_dir / "flows.parquet", columns=["transport", "local_ip", "local_port", "remote_ip", "remote_port",
                                                                   "packets_out", "packets_in", "bytes_out", "bytes_in"])  # fmt: skip
    df = df[df.transport.isin(["tcp", "udp"])]
    ours: dict[tuple[str, frozenset[tuple[str, int]]], list[int]] = defaultdict(lambda: [0, 0, 0])
    for t, li, lp, ri, rp, po, pi, bo, bi in df.itertuples(index=False):
        f = ours[(t, frozenset(((li, int(lp)), (ri, int(rp)))))]
        f[0] += int(po + pi)
        f[1] += int(bo + bi)
        f[2] += 1
    theirs = _tshark_flows(path)
    keys = set(ours) | set(theirs)
    same_p = same_pb = 0
    bytes_agree = bytes_total = 0
    split_ours = sum(1 for v in ours.values() if v[2] > 1)
    for k in keys:
        o, t = ours.get(k), theirs.get(k)
        b = max(o[1] if o else 0, t[1] if t else 0)
        bytes_total += b
        if o and t and o[0] == t[0]:
            same_p += 1
            if o[1] == t[1]:
                same_pb += 1
                bytes_agree += b
    return {
        "conversations": len(keys),
        "egressaudit_flows": int(len(df)),
        "tshark_streams": sum(v[2] for v in theirs.values()),
        "only_egressaudit": len(set(ours) - set(theirs)),
        "only_tshark": len(set(theirs) - set(ours)),
        "split_by_egressaudit": split_ours,
        "packets_agree_pct": 100 * same_p / len(keys) if keys else 0.0,
        "packets_and_bytes_agree_pct": 100 * same_pb / len(keys) if keys else 0.0,
        "bytes_in_agreeing_pct": 100 * bytes_agree / bytes_total if bytes_total else 0.0,
    }


def bench_ingest(packets: int, scapy_slice: int, skip: set[str], rounds: int = 3) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    path = build_capture(packets)
    build_s = time.perf_counter() - t0
    n_frames = packets
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"capture": str(path.relative_to(ROOT)), "packets": n_frames, "file_mb": path.stat().st_size / 2**20,
                            "build_s": build_s}  # fmt: skip
    out = Path(tempfile.mkdtemp(prefix="ea-bench-"))
    session = out / "session"
    egress = [sys.executable, "-m", "egressaudit", "analyze", str(path), "--out", str(session), "--quiet"]
    # egressaudit and NFStream alternate over the rounds (a shared machine drifts); the median of each is reported
    runs: dict[str, list[dict[str, Any]]] = {"egressaudit": [], "nfstream": []}
    nf_flows = 0
    for k in range(rounds):
        console.print(f"[bold]ingest[/] round {k + 1}/{rounds}: {n_frames:,} packets, {info['file_mb']:.0f} MB: egressaudit analyze")
        shutil.rmtree(session, ignore_errors=True)
        runs["egressaudit"].append(measure(egress))
        if "nfstream" not in skip:
            console.print(f"[bold]ingest[/] round {k + 1}/{rounds}: NFStream")
            try:
                m = measure([sys.executable, "-c", NFSTREAM_SCRIPT, str(path)])
                nf_flows = int(m["stdout"].split()[0])
                runs["nfstream"].append(m)
            except (RuntimeError, ValueError) as e:
                rows.append({"tool": "NFStream", "note": f"failed: {str(e)[:200]}"})
                skip = skip | {"nfstream"}
    sj = json.loads((session / "session.json").read_text())
    info["flows"] = sj["counts"]["flows"]
    info["rounds"] = rounds

    def summary(ms: list[dict[str, Any]]) -> dict[str, Any]:
        walls = [m["wall_s"] for m in ms]
        rss = [m["peak_rss_mb"] for m in ms]
        return {"wall_s": statistics.median(walls), "peak_rss_mb": statistics.median(rss), "wall_all": [round(w, 2) for w in walls],
                "rss_all": [round(r) for r in rss]}  # fmt: skip

    ours = summary(runs["egressaudit"])
    note = f"full classification, flows.parquet + session.json; median of {rounds} (wall s: {ours['wall_all']}, MB: {ours['rss_all']})"
    rows.append({"tool": "egressaudit analyze", **ours, "packets": n_frames, "flows": sj["counts"]["flows"], "note": note})
    if runs["nfstream"]:
        nf = summary(runs["nfstream"])
        note = f"idle 120 s, active 1800 s; median of {len(runs['nfstream'])} (wall s: {nf['wall_all']}, MB: {nf['rss_all']})"
        rows.append({"tool": "NFStream (n_meters=1, no dissection)", **nf, "packets": n_frames, "flows": nf_flows, "note": note})
    if "tshark" not in skip and shutil.which("tshark"):
        console.print("[bold]ingest[/] tshark conv")
        m = measure(["tshark", "-r", str(path), "-q", "-z", "conv,tcp", "-z", "conv,udp"])
        conv = sum(1 for line in m["stdout"].splitlines() if "<->" in line)
        rows.append({"tool": "tshark -z conv,tcp -z conv,udp", "wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"], "packets": n_frames,
                     "flows": conv, "note": "conversations (no idle timeout)"})  # fmt: skip
    if "scapy" not in skip:
        n = min(scapy_slice, n_frames)
        console.print(f"[bold]ingest[/] scapy PcapReader, first {n:,} packets")
        m = measure([sys.executable, "-c", SCAPY_SCRIPT, str(path), str(n)])
        rows.append({"tool": f"scapy PcapReader full dissection ({n:,}-packet slice, extrapolated)", "wall_s": m["wall_s"] * n_frames / n,
                     "peak_rss_mb": m["peak_rss_mb"], "packets": n_frames, "flows": None,
                     "note": f"measured {m['wall_s']:.1f} s for {n:,}"})  # fmt: skip
    for r in rows:
        if "wall_s" in r:
            r["pkts_per_s"] = r["packets"] / r["wall_s"]
    info["rows"] = rows
    info["loadavg_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    if "tshark" not in skip and shutil.which("tshark"):
        console.print("[bold]ingest[/] agreement with tshark's TCP/UDP streams")
        info["agreement"] = agreement(session, path)
    info["session_dir"] = str(session)
    return info


# -- report --------------------------------------------------------------------------------
def bench_report(session_dir: Path | None, packets: int) -> dict[str, Any]:
    if session_dir is None or not (session_dir / "flows.parquet").exists():
        path = build_capture(packets)
        session_dir = Path(tempfile.mkdtemp(prefix="ea-bench-")) / "session"
        measure([sys.executable, "-m", "egressaudit", "analyze", str(path), "--out", str(session_dir), "--quiet"])
    sj = json.loads((session_dir / "session.json").read_text())
    console.print(f"[bold]report[/] on {sj['counts']['flows']:,} flows")
    try:
        m = measure([sys.executable, "-m", "egressaudit", "report", str(session_dir)])
    except RuntimeError as e:
        return {"flows": sj["counts"]["flows"], "error": str(e)[:300]}
    return {"flows": sj["counts"]["flows"], "packets": sj["counts"]["packets"], "wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"]}


# -- pcapng writer -----------------------------------------------------------------------------
def bench_writer(n: int = 200_000) -> dict[str, Any]:
    from scapy.utils import RawPcapNgWriter

    from egressaudit.capture.live import PcapNgWriter

    frame = bytes(12) + b"\x08\x00" + bytes(186)
    ts = time.time()
    res: dict[str, Any] = {"frames": n, "frame_bytes": len(frame)}
    with tempfile.TemporaryDirectory() as d:
        p1 = Path(d) / "a.pcapng"
        t0 = time.perf_counter()
        with open(p1, "wb", buffering=1 << 20) as f:
            w = PcapNgWriter(f, 1, "lo")
            for i in range(n):
                w.write(frame, int((ts + i * 1e-5) * 1e6), len(frame))
        res["egressaudit_s"] = time.perf_counter() - t0
        p2 = Path(d) / "b.pcapng"
        t0 = time.perf_counter()
        w2 = RawPcapNgWriter(str(p2))
        w2.linktype = 1
        w2.write_header(frame)  # write_packet() alone writes no SHB/IDB: the file would be unreadable
        for i in range(n):
            w2.write_packet(frame, sec=ts + i * 1e-5, caplen=len(frame), wirelen=len(frame))
        w2.close()
        res["scapy_s"] = time.perf_counter() - t0
        if shutil.which("capinfos"):
            for key, p in (("egressaudit", p1), ("scapy", p2)):
                out = subprocess.run(["capinfos", "-c", "-a", "-e", str(p)], capture_output=True, text=True).stdout
                res[f"{key}_capinfos"] = " ".join(line.split(":", 1)[1].strip() for line in out.splitlines()[1:] if ":" in line)
    res["speedup"] = res["scapy_s"] / res["egressaudit_s"]
    return res


# -- live capture ---------------------------------------------------------------------------
CAPTURE_SCRIPT = """
import json, sys
from pathlib import Path
from egressaudit.capture.live import capture
s = capture("lo", Path(sys.argv[1]), float(sys.argv[2]), bpf=sys.argv[3])
print(json.dumps({"frames": s.frames, "kernel_packets": s.kernel_packets, "kernel_drops": s.kernel_drops,
                  "flows_done": s.flows_done, "elapsed": s.elapsed, "stopped_by": s.stopped_by, "rcvbuf": s.rcvbuf,
                  "mode": s.mode, "flow_updates_skipped": s.flow_updates_skipped}))
"""


def _udp_template(path: Path, port: int, flows: int = 64, payload: int = 172) -> None:
    """Ethernet frames (zero MACs, as on lo) of UDP 127.0.0.1:src -> 127.0.0.1:port; replayed by tcpreplay."""
    with open(path, "wb") as f:
        f.write(PCAP_HDR.pack(0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for i in range(flows):
            sport = 20000 + i
            body = struct.pack("!HHHH", sport, port, 8 + payload, 0) + bytes(payload)
            ip = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), i, 0x4000, 64, 17, 0, socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")
            )
            csum = sum(struct.unpack("!10H", ip))
            csum = (csum & 0xFFFF) + (csum >> 16)
            csum = ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF
            ip = ip[:10] + struct.pack("!H", csum) + ip[12:]
            frame = bytes(12) + b"\x08\x00" + ip + body
            f.write(PCAP_REC.pack(1_700_000_000, i, len(frame), len(frame)))
            f.write(frame)


def bench_capture(rates: list[int], duration: float) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"error": "live capture needs root"}
    if not shutil.which("tcpreplay"):
        return {"error": "tcpreplay not installed (apt-get install tcpreplay)"}
    rows = []
    for rate in rates:
        port = 40000 + rate % 20000
        bpf = f"udp and dst port {port}"
        with tempfile.TemporaryDirectory() as d:
            dd = Path(d)
            tpl = dd / "udp.pcap"
            _udp_template(tpl, port)
            # no stop time it could reach: like tcpdump, ours ends on the SIGINT sent once the sender is done
            ours = subprocess.Popen([sys.executable, "-c", CAPTURE_SCRIPT, str(dd / "ours"), str(duration * 20 + 3600), bpf],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
            tcpd = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-B", str(64 << 10), "-s", "262144", "-w", str(dd / "tcpdump.pcap"), bpf],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            time.sleep(3.0)
            count = int(rate * duration)
            console.print(f"[bold]capture[/] {rate:,} pkt/s for {duration:g} s ({count:,} packets) to 127.0.0.1:{port}")
            rep = subprocess.run(["tcpreplay", "-i", "lo", f"--pps={rate}", f"--limit={count}", "--loop=0", str(tpl)],
                                 capture_output=True, text=True)  # fmt: skip
            m = re.search(r"Actual: (\d+) packets .* in ([\d.]+) seconds", rep.stdout)
            sent = int(m.group(1)) if m else count
            sent_s = float(m.group(2)) if m else duration
            time.sleep(2.0)
            ours.send_signal(signal.SIGINT)
            tcpd.send_signal(signal.SIGINT)
            o_out, o_err = ours.communicate(timeout=120)
            _, t_err = tcpd.communicate(timeout=60)
            try:
                o = json.loads(o_out.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                o = {"frames": 0, "kernel_drops": -1, "error": o_err.decode()[-300:]}
            te = t_err.decode()
            tc = re.search(r"(\d+) packets captured", te)
            td = re.search(r"(\d+) packets dropped by kernel", te)
            rows.append({
                "rate": rate, "sent": sent, "sent_rate": sent / sent_s if sent_s else 0.0,
                "ours_frames": o.get("frames", 0), "ours_drops": o.get("kernel_drops", -1), "ours_flows": o.get("flows_done", 0),
                "ours_stopped_by": o.get("stopped_by"), "ours_mode": o.get("mode"), "ours_flow_updates_skipped": o.get("flow_updates_skipped"),
                "tcpdump_frames": int(tc.group(1)) if tc else 0, "tcpdump_drops": int(td.group(1)) if td else -1,
            })  # fmt: skip
    lossless = [r["rate"] for r in rows if r["ours_frames"] >= r["sent"] and r["ours_drops"] == 0]
    lossless_td = [r["rate"] for r in rows if r["tcpdump_frames"] >= r["sent"] and r["tcpdump_drops"] == 0]
    return {
        "duration_s": duration,
        "rows": rows,
        "highest_lossless": max(lossless, default=0),
        "highest_lossless_tcpdump": max(lossless_td, default=0),
        "sender": "tcpreplay on lo (one process), 64 UDP flows, 214-byte frames",
        "buffers": "both 64 MiB (tcpdump -B 65536; capture() rcvbuf)",
    }


# -- session footprint -----------------------------------------------------------------------------
CALL = ROOT / "captures" / "janus-echo" / "call.pcapng"
CALL_LOCAL_NET = "10.77.0.2/32"
CALL_SIGNATURES = ROOT / "captures" / "janus-echo" / "selfhosted.yaml"
CALL_WHY = ("a real 1:1 WebRTC call (headless Chromium and a Janus EchoTest: Opus audio and VP8 video both ways over one "
            "ICE/DTLS-SRTP flow, plus signalling and an HTTPS getStats() telemetry channel), recorded by the project in two "
            "namespaces; none of ../shared/captures holds a sustained call: they are trimmed test fixtures whose longest "
            "stretch without a 1 s gap is at most 1,535 packets over 23 s (teams.pcap, 66 pkt/s, mostly TLS) or a few seconds "
            "of media (zoom.pcap 685 packets in 5.4 s, zoom_p2p.pcapng 322 in 1.7 s)")  # fmt: skip


class _Netns:
    """A network namespace with one end of a veth pair; the other end (``host``) stays here to capture on.

    Nothing is routed: neither end has an address, IPv6 is off on both (no router or neighbour solicitations), and the
    replayed frames' MAC addresses are no one's here, so every frame ends at the far end of the pair.  Both ends take
    frames up to 65,000 bytes: the call was captured on a veth with segmentation offload (28 frames of up to 34,818)."""

    PREFIX = "eabench"

    def __init__(self) -> None:
        self.name = f"{self.PREFIX}{os.getpid()}"
        tag = os.getpid() % 100_000
        self.host, self.peer = f"eab{tag}h", f"eab{tag}n"
        self._sweep()
        try:
            for cmd in (["ip", "netns", "add", self.name],
                        ["ip", "link", "add", self.host, "mtu", "65000", "type", "veth", "peer", "name", self.peer, "mtu", "65000"],
                        ["ip", "link", "set", self.peer, "netns", self.name],
                        ["sysctl", "-qw", f"net.ipv6.conf.{self.host}.disable_ipv6=1"],
                        ["ip", "netns", "exec", self.name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                        ["ip", "netns", "exec", self.name, "sysctl", "-qw", f"net.ipv6.conf.{self.peer}.disable_ipv6=1"],
                        ["ip", "link", "set", self.host, "up"],
                        ["ip", "netns", "exec", self.name, "ip", "link", "set", self.peer, "up"]):  # fmt: skip
                subprocess.run(cmd, check=True, capture_output=True, text=True)
        except BaseException:
            self.close()
            raise

    @classmethod
    def _sweep(cls) -> None:
        """Namespaces an earlier run of this benchmark left (killed before its ``finally``): theirs only, by name and dead pid."""
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.split() else ""
            m = re.fullmatch(rf"{cls.PREFIX}(\d+)", name)
            if m and not psutil.pid_exists(int(m.group(1))):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
                subprocess.run(["ip", "link", "del", f"eab{int(m.group(1)) % 100_000}h"], capture_output=True)

    def exec(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host], capture_output=True)  # (deletes the pair's other end too)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class _Tree:
    """CPU time and RSS of a process and all its descendants, sampled every ``every`` seconds in a thread.

    CPU is each process's own user+system time (psutil cpu_times, in clock ticks of 10 ms), last seen, summed over every
    process the tree held since ``mark()``; alongside, each thread's time on CPU from ``/proc/PID/task/TID/schedstat``
    (nanoseconds: a tool using less than a tick per second still shows), which also splits the supervisor's time by
    thread: its main thread, the capture thread (the one mostly blocked in poll on the ring) and the rest (the
    socket-table sampler; its other threads sleep).  RSS is the sum over the tree's processes at each sample, and its
    peak (shared pages counted once per process, so an upper bound); the same for PSS (shared pages split between the
    processes that share them: sums to what the tree holds)."""

    POLL_SYSCALLS = {"7", "271"}  # poll, ppoll (x86-64)

    def __init__(self, pid: int, every: float = 0.5, root_role: str = "supervisor") -> None:
        import threading

        self.pid, self.every, self.root_role = pid, every, root_role
        self.cpu: dict[tuple[int, float], tuple[str, float]] = {}  # (pid, create time) -> (role, user+system s), last seen
        self.sched: dict[tuple[int, float, int], tuple[str, int]] = {}  # (pid, create time, tid) -> (role, ns on CPU), last seen
        self.syscalls: dict[int, Counter[str]] = defaultdict(Counter)  # the supervisor's threads: what each was blocked in
        self.base: dict[tuple[int, float], float] = {}
        self.sched_base: dict[tuple[int, float, int], int] = {}
        self.peak_rss = self.peak_pss = 0
        self.peak_by_role: dict[str, int] = defaultdict(int)
        self.host: list[tuple[int, int]] = []  # (processes, open fds) on the host every 2 s: what the socket-table sampler walks
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sample()
        self._thread.start()

    def role(self, p: psutil.Process) -> str:
        if p.pid == self.pid:
            return self.root_role
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            return "other"
        if "mitmdump" in cmd:
            return "mitmdump"
        if "spawn_main" in cmd:
            return "recorder worker"
        if "resource_tracker" in cmd:
            return "resource tracker"
        return p.name()

    def _tasks(self, pid: int) -> list[tuple[int, int, str]]:
        """(tid, ns on CPU, current syscall) of each thread of ``pid``."""
        out = []
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return out
        for t in tids:
            try:
                ns = int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
                sc = Path(f"/proc/{pid}/task/{t}/syscall").read_text().split()[0] if pid == self.pid else ""
            except (OSError, ValueError, IndexError):
                continue
            out.append((int(t), ns, sc))
        return out

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss_sum = 0
        by_role: dict[str, int] = defaultdict(int)
        with self._lock:
            for p in procs:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        m = p.memory_info().rss
                        pss = getattr(p.memory_full_info(), "pss", 0)
                        key = (p.pid, p.create_time())
                        role = self.cpu[key][0] if key in self.cpu else self.role(p)
                except psutil.Error:
                    continue
                self.cpu[key] = (role, t.user + t.system)
                for tid, ns, sc in self._tasks(p.pid):
                    self.sched[(*key, tid)] = (role, ns)
                    if sc:
                        self.syscalls[tid][sc] += 1
                rss += m
                pss_sum += pss
                by_role[role] += m
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss_sum)
            for k, v in by_role.items():
                self.peak_by_role[k] = max(self.peak_by_role[k], v)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every):
            self.sample()
            n += 1
            if n % 4 == 0:
                self.host.append(_host_counts())

    def mark(self) -> None:
        """Start of the measured window: CPU counts from here, the RSS peak starts again."""
        self.sample()
        with self._lock:
            self.base = {k: v for k, (_, v) in self.cpu.items()}
            self.sched_base = {k: v for k, (_, v) in self.sched.items()}
            self.peak_rss = self.peak_pss = 0
            self.peak_by_role = defaultdict(int)
            self.host = []
        self.sample()

    def _thread_role(self, role: str, pid: int, tid: int) -> str:
        if role != "supervisor":
            return role
        if tid == pid:
            return "supervisor: main thread"
        top = self.syscalls[tid].most_common(1)
        return "supervisor: capture thread" if top and top[0][0] in self.POLL_SYSCALLS else "supervisor: sampler, other threads"

    def used(self) -> tuple[float, dict[str, float], float, dict[str, float]]:
        """Since ``mark()``: CPU seconds (cpu_times) in total and by process role; on-CPU seconds (schedstat) in total
        and by process role, the supervisor's split by thread."""
        self.sample()
        by_role: dict[str, float] = defaultdict(float)
        by_thread: dict[str, float] = defaultdict(float)
        with self._lock:
            for k, (role, v) in self.cpu.items():
                by_role[role] += v - self.base.get(k, 0.0)
            for k, (role, ns) in self.sched.items():
                by_thread[self._thread_role(role, k[0], k[2])] += (ns - self.sched_base.get(k, 0)) / 1e9
        return sum(by_role.values()), dict(by_role), sum(by_thread.values()), dict(by_thread)

    def quiet(self, cpu_s: float = 0.15, window: float = 1.0, limit: float = 30.0) -> float:
        """Wait until the tree used less than ``cpu_s`` of CPU over ``window`` seconds (start-up done); seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            self.mark()
            time.sleep(window)
            if self.used()[0] < cpu_s:
                break
        return time.monotonic() - t0

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _replay(ns: _Netns, args: list[str], path: Path) -> dict[str, Any]:
    """tcpreplay from inside the namespace onto its end of the pair: the frames arrive on the captured host end."""
    r = subprocess.run(ns.exec(["tcpreplay", "--intf1", ns.peer, *args, str(path)]), capture_output=True, text=True)
    m = re.search(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds", r.stdout)
    failed = re.search(r"Failed packets:\s+(\d+)", r.stdout)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"tcpreplay {' '.join(args)} exited {r.returncode}: {(r.stdout + r.stderr)[-1500:]}")
    sent, nbytes, secs = int(m.group(1)), int(m.group(2)), float(m.group(3))
    return {"sent": sent, "bytes": nbytes, "seconds": secs, "pps": sent / secs if secs else 0.0, "failed": int(failed.group(1)) if failed else 0}


def _session_cmd(iface: str, out: Path) -> list[str]:
    return ["egressaudit", "session", "start", "-i", iface, "--out", str(out), "--force", "-q", "--local-net", CALL_LOCAL_NET,
            "--signatures", str(CALL_SIGNATURES)]  # fmt: skip


def _start_session(iface: str, out: Path, log: Path) -> subprocess.Popen[bytes]:
    """``egressaudit session start`` on ``iface``, once its proxy listens and its capture runs."""
    exe = shutil.which("egressaudit")
    cmd = _session_cmd(iface, out)
    if exe is None:
        cmd = [sys.executable, "-m", "egressaudit", *cmd[1:]]
    with open(log, "wb") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode} while starting: {log.read_text(errors='replace')[-2000:]}")
        try:
            sj = json.loads((out / "session.json").read_text())
        except (OSError, ValueError):
            sj = {}
        if (sj.get("call") or {}).get("proxy_pid") and (out / "capture.pcapng").exists():
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{' '.join(cmd)} did not start within 90 s: {log.read_text(errors='replace')[-2000:]}")


def _stop_session(proc: subprocess.Popen[bytes], out: Path, log: Path, timeout: float = 600) -> dict[str, Any]:
    """SIGINT; seconds to exit, when its proxy (mitmdump) was gone, and what session.json says."""
    try:
        proxy = [p for p in psutil.Process(proc.pid).children() if "mitmdump" in " ".join(p.cmdline())]
    except psutil.Error:
        proxy = []
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proxy_gone = None
    while proc.poll() is None:
        if proxy_gone is None and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in proxy):
            proxy_gone = time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            proc.wait()
            break
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    res: dict[str, Any] = {"sigint_to_exit_s": wall, "proxy_gone_s": proxy_gone, "exit_code": proc.returncode}
    try:
        sj = json.loads((out / "session.json").read_text())
    except (OSError, ValueError) as e:
        sj = {}
        res["error"] = f"session.json: {e}"
    cap, call = sj.get("capture") or {}, sj.get("call") or {}
    res.update({"state": sj.get("state"), "stopped_by": call.get("stopped_by"), "frames": cap.get("frames"), "kernel_drops": cap.get("kernel_drops"),
                "kernel_packets": cap.get("kernel_packets"), "ring_freezes": cap.get("ring_freezes"),
                "flow_updates_skipped": cap.get("flow_updates_skipped"), "flows": (sj.get("counts") or {}).get("flows"),
                "packets_analysed": (sj.get("counts") or {}).get("packets")})  # fmt: skip
    if proc.returncode != 0 or sj.get("state") != "complete":
        res["log_tail"] = log.read_text(errors="replace")[-2000:]
    return res


def _footprint_run(tool: str, ns: _Netns, work: Path, load: str, seconds: float, multiplier: float, call: Path) -> dict[str, Any]:
    """One tool capturing on the host end while the call replays (``load`` "call") or nothing happens ("idle")."""
    out = work / f"{tool}-{load}-{multiplier:g}"
    log = work / f"{tool}-{load}-{multiplier:g}.log"
    if tool == "egressaudit":
        proc = _start_session(ns.host, out, log)
    else:
        out.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as lf:
            proc = subprocess.Popen(["tcpdump", "-i", ns.host, "-w", str(out / "tcpdump.pcap")], stdout=lf, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        time.sleep(1.0)
    row: dict[str, Any] = {"tool": tool, "load": load, "multiplier": multiplier if load == "call" else None}
    tree = _Tree(proc.pid, root_role="supervisor" if tool == "egressaudit" else tool)
    try:
        row["settle_s"] = tree.quiet()
        tree.mark()
        t0 = time.perf_counter()
        if load == "call":
            speed = [] if multiplier == 1 else [f"--multiplier={multiplier:g}"]
            row["replay"] = _replay(ns, ["--loop=0", f"--duration={seconds:g}", *speed], call)
        else:
            time.sleep(seconds)
        row["seconds"] = time.perf_counter() - t0
        cpu, by_role, sched, by_thread = tree.used()
        row.update({"cpu_s": cpu, "cpu_by_process_s": by_role, "cpu_pct_core": 100 * cpu / row["seconds"], "sched_cpu_s": sched,
                    "sched_cpu_by_thread_s": by_thread, "sched_cpu_pct_core": 100 * sched / row["seconds"],
                    "peak_rss_mb": tree.peak_rss / 2**20, "peak_pss_mb": tree.peak_pss / 2**20,
                    "peak_rss_by_process_mb": {k: v / 2**20 for k, v in tree.peak_by_role.items()},
                    "processes": sorted({r for r, _ in tree.cpu.values()}),
                    "host_processes_fds_mean": [round(statistics.mean(x), 1) for x in zip(*tree.host, strict=True)] if tree.host else None,
                    "host_processes_fds_max": [max(x) for x in zip(*tree.host, strict=True)] if tree.host else None})  # fmt: skip
        time.sleep(1.0)  # the last frames out of the ring
    finally:
        tree.close()
        if tool == "egressaudit":
            row["stop"] = _stop_session(proc, out, log)
        else:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            text = log.read_text(errors="replace")
            c = re.search(r"(\d+) packets captured", text)
            d = re.search(r"(\d+) packets dropped by kernel", text)
            row["stop"] = {"frames": int(c.group(1)) if c else None, "kernel_drops": int(d.group(1)) if d else None, "exit_code": proc.returncode}
        shutil.rmtree(out, ignore_errors=True)
    return row


def _drained(path: Path, quiet_s: float = 2.0, limit: float = 300.0) -> float:
    """Wait until ``path`` (flushed every 0.5 s while capturing) stopped growing for ``quiet_s``: the ring is empty."""
    t0 = time.monotonic()
    last, since = -1, time.monotonic()
    while time.monotonic() - t0 < limit:
        size = path.stat().st_size if path.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.1)
    return time.monotonic() - t0


def _finalise_hour(ns: _Netns, work: Path, call: Path, call_pps: float, hour_s: float, pps: int, tries: int) -> dict[str, Any]:
    """An hour of the call through a session at ``pps`` (halved while the kernel drops frames), then SIGINT to exit."""
    packets = round(call_pps * hour_s)
    per_loop = _frames_in(call)
    loops = -(-packets // per_loop)
    res: dict[str, Any] = {"call_seconds": hour_s, "packets": packets, "loops": loops, "attempts": []}
    out = work / "hour"
    log = work / "hour.log"
    for k in range(tries):
        console.print(f"[bold]session[/] finalisation: {packets:,} packets ({hour_s / 3600:g} h of the call) at {pps:,} pkt/s, try {k + 1}")
        shutil.rmtree(out, ignore_errors=True)
        proc = _start_session(ns.host, out, log)
        try:
            time.sleep(2.0)
            rep = _replay(ns, [f"--pps={pps}", f"--loop={loops}", f"--limit={packets}"], call)
            drain_s = _drained(out / "capture.pcapng")
        finally:
            stop = _stop_session(proc, out, log)
        att = {"pps_target": pps, "replay": rep, "drain_s": drain_s, **stop,
               "pcapng_mb": (out / "capture.pcapng").stat().st_size / 2**20 if (out / "capture.pcapng").exists() else None}  # fmt: skip
        res["attempts"].append(att)
        if (stop.get("kernel_drops") or 0) == 0 and stop.get("state") == "complete":
            break
        pps //= 2
    final = res["attempts"][-1]
    pcap = out / "capture.pcapng"
    if final.get("state") != "complete" or not pcap.exists():
        res["error"] = final.get("log_tail", "no finished session")
        return res
    peers = []
    console.print("[bold]session[/] finalisation peers on the same capture.pcapng")
    analyse = work / "analyse"
    for name, cmd in (("egressaudit analyze capture.pcapng", [sys.executable, "-m", "egressaudit", "analyze", str(pcap), "--out", str(analyse),
                                                             "--local-net", CALL_LOCAL_NET, "--signatures", str(CALL_SIGNATURES), "--quiet"]),
                      ("tshark -r capture.pcapng -q -z conv,udp", ["tshark", "-r", str(pcap), "-q", "-z", "conv,udp"]),
                      ("NFStream (n_meters=1, no dissection)", [sys.executable, "-c", NFSTREAM_SCRIPT, str(pcap)])):  # fmt: skip
        if cmd[0] == "tshark" and not shutil.which("tshark"):
            continue
        try:
            m = measure(cmd, cwd=ROOT)
            peers.append({"tool": name, "wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"]})
        except RuntimeError as e:
            peers.append({"tool": name, "error": str(e)[:300]})
    res["peers"] = peers
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(analyse, ignore_errors=True)
    return res


def _host_counts() -> tuple[int, int]:
    """Processes on the host and their open file descriptors (what psutil.net_connections walks)."""
    procs = fds = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            procs += 1
            try:
                fds += len(os.listdir(p / "fd"))
            except OSError:
                pass
    return procs, fds


def _frames_in(path: Path) -> int:
    from egressaudit.capture.reader import ReadStats, iter_frames

    return sum(1 for _ in iter_frames(path, ReadStats(path=str(path))))


def bench_session(seconds: float, idle_s: float, multipliers: list[float], hour_s: float, fast_pps: int, tries: int = 3,
                  call: Path = CALL) -> dict[str, Any]:  # fmt: skip
    """The footprint of ``egressaudit session start`` (supervisor + mitmdump + recorder worker) while a replayed 1:1 call
    runs through the interface it captures on, against a plain tcpdump; and its finalisation after an hour of the call."""
    if os.geteuid() != 0:
        return {"error": "session start and the namespace need root"}
    for tool in ("tcpreplay", "tcpdump", "ip"):
        if not shutil.which(tool):
            return {"error": f"{tool} not installed"}
    from egressaudit.capture.reader import ReadStats, iter_frames

    ts = [f.ts for f in iter_frames(call, ReadStats(path=str(call)))]
    call_s = ts[-1] - ts[0]
    res: dict[str, Any] = {"call": str(call.relative_to(ROOT)) if call.is_relative_to(ROOT) else str(call), "call_packets": len(ts),
                           "call_seconds": call_s, "call_pps": len(ts) / call_s, "why": CALL_WHY if call == CALL else "",
                           "seconds": seconds, "idle_seconds": idle_s, "target_cpu_pct": 10.0, "target_finalise_s": 10.0,
                           "session_command": " ".join(_session_cmd("IFACE", Path("OUT"))), "rows": []}  # fmt: skip
    load0 = os.getloadavg()[0]
    res["host_processes"], res["host_fds"] = _host_counts()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # (started in the background by a shell) the tools would inherit it
        signal.signal(signal.SIGINT, signal.default_int_handler)  # and ignore the SIGINT that stops them

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(f"signal {signum}")  # the namespace and the processes are cleaned up on the way out

    previous = signal.signal(signal.SIGTERM, on_term)
    ns = _Netns()
    work = Path(tempfile.mkdtemp(prefix="ea-bench-session-"))
    try:
        plan = [("egressaudit", "idle", 1.0), ("tcpdump", "idle", 1.0)]
        for mult in multipliers:  # interleaved, and the order flips between multipliers (drift hits both alike)
            pair = [("egressaudit", "call", mult), ("tcpdump", "call", mult)]
            plan += pair if len(plan) % 4 == 2 else pair[::-1]
        for tool, load, mult in plan:
            secs = seconds if load == "call" else idle_s
            what = f"the call at {mult:g}x" if load == "call" else "no traffic"
            console.print(f"[bold]session[/] {tool}: {what} for {secs:g} s on {ns.host}")
            res["rows"].append(_footprint_run(tool, ns, work, load, secs, mult, call))
        res["finalisation"] = _finalise_hour(ns, work, call, res["call_pps"], hour_s, fast_pps, tries)
    finally:
        ns.close()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)
    res["loadavg_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    return res


def _session_tables(ss: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    if "rows" not in ss:
        return [("Session footprint", ["status"], [[ss.get("error", "?")]], "")]
    out = []
    peer = {(r["load"], r["multiplier"]): r for r in ss["rows"] if r["tool"] == "tcpdump"}
    rows = []
    for r in ss["rows"]:
        rep = r.get("replay") or {}
        p = peer.get((r["load"], r["multiplier"]))
        ratio = r["sched_cpu_s"] / p["sched_cpu_s"] if p and r["tool"] != "tcpdump" and p.get("sched_cpu_s") else None
        load = "idle" if r["load"] == "idle" else f"call, {r['multiplier']:g}x"
        threads = r["sched_cpu_by_thread_s"]
        by = ", ".join(f"{k} {v:.2f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if len(threads) > 1)
        rss_by = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["peak_rss_by_process_mb"].items(), key=lambda kv: -kv[1])
                           if len(r["peak_rss_by_process_mb"]) > 1)  # fmt: skip
        st = r.get("stop") or {}
        hm = r.get("host_processes_fds_mean")
        hostc = f"{hm[0]:.0f} / {hm[1]:,.0f}" if hm else ""
        name = "egressaudit session start" if r["tool"] == "egressaudit" else "tcpdump -i IFACE -w FILE"
        rows.append([name, load, _f(r["seconds"], ".1f"), _f(rep.get("sent")), _f(rep.get("pps")), _f(r["cpu_s"], ".2f"),
                     _f(r["cpu_pct_core"], ".2f"), _f(r["sched_cpu_s"], ".3f"), _f(r["sched_cpu_pct_core"], ".3f"),
                     "" if ratio is None else f"{ratio:,.0f}x", _f(r["peak_rss_mb"]), _f(r.get("peak_pss_mb")), hostc, _f(st.get("frames")),
                     _f(st.get("kernel_drops")), by, rss_by])  # fmt: skip
    calls = [r for r in ss["rows"] if r["tool"] == "egressaudit" and r["load"] == "call"]
    worst = max(calls, key=lambda r: r["cpu_pct_core"], default=None)
    one = next((r for r in calls if r["multiplier"] == 1), None)
    verdict = ""
    if one is not None:
        verdict = (
            f"At the call's own rate ({one['replay']['pps']:.0f} pkt/s) the whole session uses {one['cpu_pct_core']:.1f}% of one core "
            f"({'within' if one['cpu_pct_core'] < ss['target_cpu_pct'] else 'above'} the {ss['target_cpu_pct']:g}% target)"
        )
        cap = one["sched_cpu_by_thread_s"].get("supervisor: capture thread")
        td = peer.get(("call", 1.0))
        if cap is not None and td and td.get("sched_cpu_s"):
            sampler = one["sched_cpu_by_thread_s"].get("supervisor: sampler, other threads", 0.0)
            verdict += (
                f"; its capture thread alone (ring, pcapng, live flow table with payload inspection) {cap:.2f} s = "
                f"{100 * cap / one['seconds']:.2f}% of one core, {cap / td['sched_cpu_s']:.0f}x tcpdump's {td['sched_cpu_s']:.3f} s, and "
                f"the socket-table sampler with the idle helper threads {sampler:.2f} s"
            )
        if worst is not None and worst is not one:
            verdict += f"; at {worst['multiplier']:g}x ({worst['replay']['pps']:.0f} pkt/s) {worst['cpu_pct_core']:.1f}%"
        verdict += ". "
    note = (f"Replayed call: {ss['call']}, {ss['call_packets']:,} packets in {ss['call_seconds']:.1f} s = {ss['call_pps']:.0f} pkt/s: "
            f"{ss['why']}. tcpreplay runs inside a network namespace made for the benchmark and sends the call, looped for "
            f"{ss['seconds']:g} s at its recorded timing (or sped up by the multiplier), onto the namespace's end of a veth pair; "
            f"the tool captures on the pair's host end. Command: `{ss['session_command']}`. " + verdict
            + "'CPU s' is user+system time of every process of the tool's tree over the window (psutil cpu_times at its start "
            "and end: the supervisor with its capture and socket-table threads, mitmdump and its recorder worker), after "
            "start-up has quietened (under 0.15 CPU s per second); '% of one core' divides it by the window's seconds. "
            "cpu_times count in clock ticks of 10 ms, too coarse for tcpdump (a few ms a minute), so the same window is also "
            "measured as each thread's time on CPU from /proc/PID/task/TID/schedstat (nanoseconds), which splits the supervisor "
            "by thread too: 'capture thread' is the one that waits in poll on the ring, 'sampler, other threads' the socket-table "
            "sampler (psutil.net_connections, which reads every process's file descriptors, when the kernel's socket counters "
            "move, every 0.5 s while there is traffic and every 2 s without; the counters polled every 0.04 s; its cost grows with "
            "the host's processes and sockets) with the supervisor's sleeping helper threads. "
            "Peak RSS is sampled every 0.5 s and summed over the tree (shared pages counted once per process); peak PSS the same with "
            "shared pages split between the processes sharing them (what the tree holds). "
            "'CPU vs tcpdump' is on-CPU s over tcpdump's in the same load. Idle: no traffic on the interface for "
            f"{ss['idle_seconds']:g} s. The host had {ss.get('host_processes', '?')} processes with {ss.get('host_fds', '?'):,} open file "
            "descriptors at the start ('host processes / fds': the mean during each window, counted every 2 s; another user's work "
            "on this shared machine moves it). "
            f"Load average (1 min) before/after on {os.cpu_count()} cores: {ss.get('loadavg_before_after')}.")  # fmt: skip
    out.append(("Session footprint (egressaudit session start vs tcpdump)",
                ["tool", "load", "s", "packets replayed", "pkt/s", "CPU s", "% of one core", "on-CPU s (schedstat)", "% of one core (schedstat)",
                 "CPU vs tcpdump (schedstat)", "peak RSS MB", "peak PSS MB", "host processes / fds (mean)", "frames captured", "kernel drops",
                 "on-CPU s by process and thread", "peak RSS MB by process"], rows, note))  # fmt: skip
    fin = ss.get("finalisation")
    if fin:
        a = fin["attempts"][-1] if fin.get("attempts") else {}
        ours = a.get("sigint_to_exit_s")
        rows = []
        for t in fin["attempts"]:
            rep = t.get("replay") or {}
            rows.append(["egressaudit session start: SIGINT to exit", _f(t.get("sigint_to_exit_s"), ".2f"),
                         "1.00x" if t is a else "", _f(rep.get("sent")), _f(rep.get("pps")), _f(t.get("frames")), _f(t.get("kernel_drops")),
                         _f(t.get("flows")), str(t.get("state")),
                         f"proxy gone after {t['proxy_gone_s']:.2f} s" if t.get("proxy_gone_s") is not None else ""])  # fmt: skip
        for p in fin.get("peers", []):
            if "wall_s" not in p:
                rows.append([p["tool"], "", "", "", "", "", "", "", "failed", p.get("error", "")])
                continue
            rows.append([p["tool"], _f(p["wall_s"], ".2f"), f"{p['wall_s'] / ours:.2f}x" if ours else "", "", "", "", "", "", "",
                         f"peak RSS {p['peak_rss_mb']:.0f} MB"])  # fmt: skip
        ok = a.get("state") == "complete" and ours is not None
        span = "An hour" if fin["call_seconds"] == 3600 else f"{fin['call_seconds'] / 60:g} minutes"
        note = (f"{span} of the call is {fin['packets']:,} packets ({fin['call_seconds']:g} s at {ss['call_pps']:.1f} pkt/s): the call "
                f"replayed {fin['loops']} times (cut at that count) at a fixed packet rate, not its timing, into a fresh session; once "
                "capture.pcapng stopped growing, SIGINT, and the time until the process exited with the session finished "
                "(proxy stopped, capture analysed, flows and exchanges attributed and joined, manifest complete). Packet times are "
                "compressed accordingly, so no flow ends by idle timeout during the capture. Then the peers read the same "
                "capture.pcapng; 'vs finalisation' is their wall time over the session's SIGINT-to-exit time. "
                + (f"Target: under {ss['target_finalise_s']:g} s; measured {ours:.1f} s "
                   f"({'within' if ours < ss['target_finalise_s'] else 'above'} target), kernel drops {a.get('kernel_drops')}."
                   if ok else f"The session did not finish: {fin.get('error', '')[:300]}"))  # fmt: skip
        title = "an hour" if fin["call_seconds"] == 3600 else f"{fin['call_seconds'] / 60:g} minutes"
        out.append((f"Session finalisation after {title} of a 1:1 call",
                    ["what", "wall s", "vs finalisation", "packets sent", "sent pkt/s", "frames captured", "kernel drops", "flows",
                     "state", "note"], rows, note))  # fmt: skip
    return out


# -- proxy overhead ------------------------------------------------------------------------------
ADDON = ROOT / "addons" / "egressaudit_addon.py"
REDIRECT = ROOT / "tests" / "support" / "redirect_addon.py"

SINK_SCRIPT = """
import sys, threading, time
from pathlib import Path
from tests.support.sink import Sink
s = Sink(Path(sys.argv[1]))
# TCP_NODELAY on the sink's connections too (mitmproxy's asyncio sockets have it): http.server sends a response's headers and
# body separately, and with Nagle on the body could wait for a delayed ACK - a stall of the sink, not of what is measured
s.server.RequestHandlerClass.disable_nagle_algorithm = True
def forget():  # the sink keeps every body it received; the benchmark does not need them
    while True:
        time.sleep(0.5)
        del s.received[:]
threading.Thread(target=forget, daemon=True).start()
print(s.port, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
"""

PROFILE_SCRIPT = """
import cProfile, signal, sys
out = sys.argv[1]
sys.argv = ["mitmdump", *sys.argv[2:]]
from mitmproxy.tools.main import mitmdump
prof = cProfile.Profile()
# the benchmark profiles the requests only, not start-up or shutdown (SIGUSR1/2 are mitmproxy's own debug dumps)
signal.signal(signal.SIGRTMIN + 3, lambda *_: prof.enable())
signal.signal(signal.SIGRTMIN + 4, lambda *_: prof.disable())
try:
    mitmdump()
finally:
    prof.disable()
    prof.dump_stats(out)
"""

EMAILS = ["alice.example@example.org", "bob.smith@contoso.com", "carol@fabrikam.io", "dave.o@example.net"]
TITLES = ["Quarterly board review", "1:1 Alice / Bob", "Incident 4711 bridge", "Hiring panel - staff engineer"]


def _events(rng: Any, n: int, kind: str) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        e = {
            "event": rng.choice(["Call Started", "qos", "Screen Share Started", "Device Changed", "meeting_joined"]),
            "email": rng.choice(EMAILS),
            "device_id": f"{rng.getrandbits(128):032x}",
            "meeting_id": str(rng.randrange(10**10, 10**11)),
            "meeting_title": rng.choice(TITLES),
            "timestamp": 1_763_880_000 + i,
            "os": rng.choice(["Windows 11 23H2", "macOS 14.5", "Ubuntu 24.04"]),
            "app_version": "5.17.1 (31859)",
            "qos": {"jitter_ms": rng.randrange(40), "rtt_ms": rng.randrange(300), "loss_pct": round(rng.random() * 3, 2),
                    "bitrate_kbps": rng.randrange(200, 3000), "codec": rng.choice(["opus", "VP8", "H264"])},
        }  # fmt: skip
        if kind == "segment":
            out.append({"type": "track", "userId": e.pop("device_id"), "event": e.pop("event"), "properties": e, "messageId": f"{i:08d}"})
        elif kind == "amplitude":
            out.append({"event_type": e.pop("event"), "user_id": e.pop("email"), "device_id": e.pop("device_id"), "event_properties": e})
        elif kind == "posthog":
            out.append({"event": e.pop("event"), "distinct_id": e.pop("device_id"), "properties": e})
        else:
            out.append(e)
    return out


def telemetry_requests(n: int, seed: int = 7, gzip_share: float = 0.75) -> list[tuple[str, str, dict[str, str], bytes]]:
    """``n`` telemetry POSTs (host, path, headers, body) to real vendor host names: 2-8 KB JSON (or a Sentry envelope) before
    encoding, ``gzip_share`` of them gzip-encoded as the SDKs do, the rest plain."""
    import gzip
    import random

    rng = random.Random(seed)
    endpoints = [("api.segment.io", "/v1/batch", "segment"), ("api2.amplitude.com", "/2/httpapi", "amplitude"),
                 ("us.i.posthog.com", "/batch/", "posthog"), ("log.zoom.us", "/v1/log", "zoom"),
                 ("o4501.ingest.sentry.io", "/api/4502/envelope/", "sentry")]  # fmt: skip
    out = []
    for i in range(n):
        host, path, kind = endpoints[i % len(endpoints)]
        target = rng.randrange(2048, 8193)
        k = 1
        while True:
            ev = _events(rng, k, kind)
            if kind == "segment":
                doc: Any = {"batch": ev, "sentAt": "2025-11-23T08:00:00Z", "writeKey": "segment-write-key"}
            elif kind == "amplitude":
                doc = {"api_key": "amplitude-api-key", "events": ev}
            elif kind == "posthog":
                doc = {"api_key": "phc_testkey", "batch": ev}
            else:
                doc = {"events": ev}
            if kind == "sentry":
                item = json.dumps({"message": "audio device lost", "level": "error", "user": {"email": ev[0]["email"]}, "extra": doc})
                body = (json.dumps({"event_id": f"{rng.getrandbits(128):032x}", "dsn": "https://abc123def456@o4501.ingest.sentry.io/4502"})
                        + "\n" + json.dumps({"type": "event", "length": len(item)}) + "\n" + item).encode()  # fmt: skip
                ctype = "application/x-sentry-envelope"
            else:
                body = json.dumps(doc).encode()
                ctype = "application/json"
            if len(body) >= target or k > 200:
                break
            k += 1
        headers = {"content-type": ctype, "user-agent": "bench-telemetry/1.0", "x-decoded-length": str(len(body))}
        if rng.random() < gzip_share:
            body = gzip.compress(body)
            headers["content-encoding"] = "gzip"
        out.append((host, path, headers, body))
    return out


class _Clients:
    """Keep-alive HTTPS clients (urllib3; one connection per vendor host and client thread) to one target, a proxy or the
    sink directly, kept from one block of requests to the next so that only the first block of a run sets up connections."""

    def __init__(self, threads: int, proxy: str | None, ca: Path | None, sink_port: int) -> None:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.proxy, self.sink_port = proxy, sink_port
        self.timeout = urllib3.Timeout(connect=10, read=60)
        self.pms: list[Any] = []
        if proxy:
            # socket_options: without them the CONNECT-tunnelled connections of urllib3 2.x's ProxyManager run with Nagle on (its
            # direct pools do not), and as headers and body go in two sends every POST through any proxy then waits ~45 ms for a
            # delayed ACK (measured here: 50 ms median without, 5.6 ms with) - a client artefact the benchmark must not measure
            self.pms = [urllib3.ProxyManager(proxy, num_pools=16, maxsize=1, cert_reqs="CERT_REQUIRED", ca_certs=str(ca),
                                                        timeout=self.timeout, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
                                   for _ in range(threads)]  # fmt: skip
        self.pools: list[dict[str, Any]] = [{} for _ in range(threads)]

    def post(self, t: int, req: tuple[str, str, dict[str, str], bytes]) -> str | None:
        """One POST from client thread ``t``; an error message, or None."""
        import urllib3

        host, path, headers, body = req
        try:
            if self.proxy:
                r = self.pms[t].request("POST", f"https://{host}{path}", body=body, headers=headers, retries=False)
            else:
                pool = self.pools[t].get(host)
                if pool is None:  # as through the proxy: one connection per vendor host, its name in Host
                    pool = self.pools[t][host] = urllib3.HTTPSConnectionPool("127.0.0.1", self.sink_port, maxsize=1, cert_reqs="CERT_NONE",
                                                                             assert_hostname=False, timeout=self.timeout)  # fmt: skip
                r = pool.request("POST", path, body=body, headers={**headers, "host": host}, retries=False)
            return None if r.status == 200 else f"{host}{path}: HTTP {r.status}"
        except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
            return f"{host}{path}: {type(e).__name__}: {e}"[:300]

    def close(self) -> None:
        for pm in self.pms:
            pm.clear()
        for pools in self.pools:
            for pool in pools.values():
                pool.close()


def _drive(reqs: list[tuple[str, str, dict[str, str], bytes]], idx: list[int], clients: _Clients, threads: int) -> dict[str, Any]:
    """Send ``reqs[i] for i in idx`` from ``threads`` client threads at once; latencies (seconds) by request index."""
    import threading

    lat: dict[int, float] = {}
    errors: list[str] = []
    start = threading.Barrier(threads + 1)

    def worker(t: int, mine: list[int]) -> None:
        start.wait()
        for i in mine:
            t0 = time.perf_counter()
            err = clients.post(t, reqs[i])
            lat[i] = time.perf_counter() - t0
            if err:
                errors.append(err)

    ts = [threading.Thread(target=worker, args=(t, idx[t::threads])) for t in range(threads)]
    for th in ts:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in ts:
        th.join()
    return {"latencies": lat, "wall_s": time.perf_counter() - t0, "errors": errors}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mitmdump_cmd(port: int, conf: Path, sink_port: int, session: Path | None) -> list[str]:
    args = ["-q", "--listen-host", "127.0.0.1", "--listen-port", str(port), "--set", f"confdir={conf}",
            "--set", "connection_strategy=lazy", "--set", "ssl_insecure=true"]  # fmt: skip
    if session is not None:
        args += ["-s", str(ADDON), "--set", f"egressaudit_dir={session}"]
    args += ["-s", str(REDIRECT), "--set", f"sink=127.0.0.1:{sink_port}"]  # both runs: every upstream connection goes to the sink
    return args


def _start(cmd: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited {proc.returncode}: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("mitmdump did not start")


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _children_cpu(pid: int) -> float:
    """User+system CPU of the process's live children (the addon's recorder worker)."""
    total = 0.0
    for c in psutil.Process(pid).children(recursive=True):
        try:
            t = c.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


CONFIGS = ["direct", "mitmdump", "mitmdump+egressaudit"]
SUSTAINED = "1, sustained"
BEYOND = "1, sustained, max_lag 0"
"""Not held for a quiet proxy (egressaudit_max_lag=0): what traffic that never pauses for longer than max_lag costs."""


class _Proxy:
    """A fresh mitmdump for one configuration: 'mitmdump' (redirect only) or 'mitmdump+egressaudit' (recording to a session)."""

    def __init__(self, config: str, work: Path, sink_port: int, profile: Path | None = None, max_lag: float | None = None) -> None:
        self.config, self.profile = config, profile
        self.port = _free_port()
        self.session = work / f"session-{time.monotonic_ns()}" if config == "mitmdump+egressaudit" else None
        args = _mitmdump_cmd(self.port, work / "mitmconf", sink_port, self.session)
        if self.session is not None and max_lag is not None:
            args += ["--set", f"egressaudit_max_lag={max_lag:g}"]
        exe = shutil.which("mitmdump")
        if profile is not None:
            cmd = [sys.executable, "-c", PROFILE_SCRIPT, str(profile), *args]
        else:
            cmd = [exe, *args] if exe else [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()", *args]
        self.log = work / f"mitmdump-{self.port}.log"
        self.proc = _start(cmd, self.port, self.log)
        self.url = f"http://127.0.0.1:{self.port}"

    def cpu(self) -> tuple[float, float]:
        return _cpu(self.proc.pid), _children_cpu(self.proc.pid)

    def stop(self) -> dict[str, Any]:
        """SIGINT (the addon compacts its tables then); exit code, shutdown time and what the session folder holds."""
        res: dict[str, Any] = {}
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        res["shutdown_s"] = time.perf_counter() - t0
        res["exit_code"] = self.proc.returncode
        if self.proc.returncode != 0:
            res["log_tail"] = self.log.read_text(errors="replace")[-1000:]
        if self.session is not None:
            import pyarrow.parquet as pq

            from egressaudit.session.store import part_files

            compacted = (self.session / "http.parquet").exists()
            rows = pq.read_table(self.session / "http.parquet", columns=["kind"]).column("kind").to_pylist() if compacted else []
            res["session_http_rows"] = sum(1 for k in rows if k == "http")
            res["session_compacted"] = compacted and not part_files(self.session, "http")
            try:
                res["session_json_exchanges"] = json.loads((self.session / "session.json").read_text())["http"]["exchanges"]
            except (OSError, ValueError, KeyError):
                res["session_json_exchanges"] = None
            shutil.rmtree(self.session, ignore_errors=True)
        return res


def _settle(pid: int, timeout: float = 120.0) -> float:
    """Wait until the recorder process under mitmdump ``pid`` has stopped working (its CPU time grows by less than 5 ms
    in 0.25 s): what it held for a busy proxy is recorded before another configuration sends.  Seconds waited."""
    t0 = time.monotonic()
    last = _children_cpu(pid)
    while time.monotonic() - t0 < timeout:
        time.sleep(0.25)
        now = _children_cpu(pid)
        if now - last < 0.005:
            break
        last = now
    return time.monotonic() - t0


def _round(reqs: list[Any], threads: int, configs: list[str], work: Path, sink_port: int, block: int, gap: float,
           profile: Path | None = None, max_lag: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One round: a fresh mitmdump per proxy configuration, all started before the first request; then every configuration
    sends the same requests in blocks of ``block``, interleaved (c, a, b, then b, a, c, ...) with ``gap`` seconds of quiet
    after each block, so that drift in the machine's speed hits all of them alike and the recorder's work for a block
    (it flushes at least once a second) is done before another configuration's block starts."""
    proxies = {c: _Proxy(c, work, sink_port, profile if c == "mitmdump+egressaudit" else None, max_lag) for c in configs if c != "direct"}
    ca = work / "mitmconf" / "mitmproxy-ca-cert.pem"
    clients = {c: _Clients(threads, proxies[c].url if c in proxies else None, ca, sink_port) for c in configs}
    per: dict[str, dict[str, Any]] = {c: {"lat": {}, "wall_s": 0.0, "errors": [], "block_medians": []} for c in configs}
    stopped: dict[str, dict[str, Any]] = {}
    try:
        if profile is not None:
            proxies["mitmdump+egressaudit"].proc.send_signal(signal.SIGRTMIN + 3)
            time.sleep(0.5)
        cpu0 = {c: px.cpu() for c, px in proxies.items()}
        chunks = [list(range(i, min(i + block, len(reqs)))) for i in range(0, len(reqs), block)]
        rec = proxies.get("mitmdump+egressaudit")
        leaked = 0.0  # recorder CPU spent while another configuration's block ran (should be ~0: it would flatter (b))
        settled = 0.0  # the longest wait for the recorder to finish a block's work
        alongside = 0.0  # recorder CPU spent while (b)'s own requests were in flight (what competes with them)
        for k, chunk in enumerate(chunks):
            for c in configs if k % 2 == 0 else configs[::-1]:
                w0 = _children_cpu(rec.proc.pid) if rec is not None else 0.0
                d = _drive(reqs, chunk, clients[c], threads)
                if rec is not None:
                    w1 = _children_cpu(rec.proc.pid)
                    if c == rec.config:
                        alongside += w1 - w0
                    else:
                        leaked += w1 - w0
                pc = per[c]
                pc["lat"].update(d["latencies"])
                pc["wall_s"] += d["wall_s"]
                pc["errors"] += d["errors"]
                pc["block_medians"].append(statistics.median(d["latencies"].values()))
                if rec is not None and c == rec.config:
                    settled = max(settled, _settle(rec.proc.pid))
                time.sleep(gap)
        cpu1 = {c: px.cpu() for c, px in proxies.items()}
        if profile is not None:
            proxies["mitmdump+egressaudit"].proc.send_signal(signal.SIGRTMIN + 4)
            time.sleep(0.5)
    finally:
        for cl in clients.values():
            cl.close()
        for c, px in proxies.items():
            stopped[c] = px.stop()
    out = []
    for c in configs:
        pc = per[c]
        lat = [pc["lat"][i] for i in range(len(reqs))]
        s = sorted(lat)
        res: dict[str, Any] = {"config": c, "threads": threads, "requests": len(reqs), "latencies": lat, "wall_s": pc["wall_s"],
                               "rps": len(reqs) / pc["wall_s"], "errors": len(pc["errors"]), "error_examples": pc["errors"][:3],
                               "median_ms": 1000 * s[len(s) // 2], "p99_ms": 1000 * s[min(len(s) - 1, int(0.99 * len(s)))],
                               "block_medians": pc["block_medians"]}  # fmt: skip
        if c in proxies:
            res["proxy_cpu_ms_per_req"] = 1000 * (cpu1[c][0] - cpu0[c][0]) / len(reqs)
            res["worker_cpu_ms_per_req"] = 1000 * (cpu1[c][1] - cpu0[c][1]) / len(reqs)
            if c == "mitmdump+egressaudit":
                res["worker_cpu_s_in_other_blocks"] = leaked
                res["worker_cpu_s_alongside"] = alongside
                res["worker_cpu_s"] = cpu1[c][1] - cpu0[c][1]
                res["settle_s_max"] = settled
            res.update(stopped[c])
        out.append(res)
    return out


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _profile_summary(prof: Path, n: int) -> dict[str, Any]:
    """Where the proxy's main thread spent its time, from a cProfile dump: the busy total (idle epoll waits left out), the
    addon's share of it, and the heaviest egressaudit functions (cumulative and own time)."""
    import pstats

    st = pstats.Stats(str(prof))
    stats: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    idle = sum(v[2] for (f, _, name), v in stats.items() if "poll" in name and ("select" in name or f == "~"))
    busy = total - idle

    def where(k: tuple[str, int, str]) -> str:
        f, line, name = k
        if f == "~":
            return name
        p = Path(f)
        try:
            p = p.relative_to(ROOT)
        except ValueError:
            parts = p.parts
            p = Path(*parts[parts.index("site-packages") + 1 :]) if "site-packages" in parts else Path(p.name)
        return f"{p}:{line}:{name}"

    names = ("response", "error", "websocket_message", "client_connected", "requestheaders")
    hooks = {k: v for k, v in stats.items() if k[0].endswith("egressaudit/http/addon.py") and k[2] in names}
    flush = {k: v for k, v in stats.items() if k[0].endswith("egressaudit/http/recorder.py") and k[2] in ("flush", "close")}
    addon_cum = sum(v[3] for v in hooks.values()) + sum(v[3] for v in flush.values())
    ours = [(k, v) for k, v in stats.items() if "/egressaudit/" in k[0] and "/site-packages/" not in k[0]]
    top_cum = sorted(ours, key=lambda kv: -kv[1][3])[:15]
    top_own = sorted(((k, v) for k, v in stats.items() if not ("poll" in k[2] and ("select" in k[2] or k[0] == "~"))), key=lambda kv: -kv[1][2])[:15]
    return {
        "requests": n,
        "busy_s": busy,
        "idle_s": idle,
        "addon_s": addon_cum,
        "addon_share_of_busy": addon_cum / busy if busy else 0.0,
        "addon_ms_per_req": 1000 * addon_cum / n,
        "top_cumulative": [{"where": where(k), "calls": v[1], "cum_s": v[3], "share_of_busy": v[3] / busy} for k, v in top_cum],
        "top_own": [{"where": where(k), "calls": v[1], "own_s": v[2], "share_of_busy": v[2] / busy} for k, v in top_own],
    }


def bench_proxy(n: int, rounds: int, threads: int, profile: bool, block: int = 200, gap: float = 1.3, sustained: bool = True,
                sustained_rounds: int = 4) -> dict[str, Any]:  # fmt: skip
    from egressaudit.http.worker import IDLE_S, MAX_HOLD_BYTES, MAX_LAG_S

    reqs = telemetry_requests(n)
    sizes = sorted(len(b) for *_, b in reqs)
    decoded = sorted(int(h["x-decoded-length"]) for _, _, h, _ in reqs)
    gz = sum(1 for _, _, h, _ in reqs if h.get("content-encoding") == "gzip")
    work = Path(tempfile.mkdtemp(prefix="ea-bench-proxy-"))
    sink = subprocess.Popen([sys.executable, "-c", SINK_SCRIPT, str(work)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    assert sink.stdout is not None
    sink_port = int(sink.stdout.readline())
    configs = CONFIGS
    runs: list[dict[str, Any]] = []
    load0 = os.getloadavg()
    try:
        # CA once, so that no measured run pays for creating it
        port = _free_port()
        p = _start([shutil.which("mitmdump") or "mitmdump", *_mitmdump_cmd(port, work / "mitmconf", sink_port, None)], port, work / "ca.log")
        p.send_signal(signal.SIGINT)
        p.wait(60)
        for r in range(rounds):
            console.print(f"[bold]proxy[/] round {r + 1}/{rounds}: {', '.join(configs)} interleaved, {n:,} POSTs each, 1 client")
            runs += [{"round": r, "group": "1", **x} for x in _round(reqs, 1, configs, work, sink_port, block, gap)]
        if threads > 1:
            for r in range(rounds):
                console.print(f"[bold]proxy[/] round {r + 1}/{rounds}: {', '.join(configs)} interleaved, {n:,} POSTs each, {threads} client threads")
                runs += [{"round": r, "group": str(threads), **x} for x in _round(reqs, threads, configs, work, sink_port, block, gap)]
        if sustained:
            # no quiet moment within a configuration's requests: the recorder holds them all (default max_lag), or with
            # max_lag 0 records alongside, as it does under traffic that never pauses for longer than max_lag;
            # rounds in alternating orders (c a b, b a c, ...), so that drift over the ~45 s of a round hits (a) and (b) alike
            for group, lag in ((SUSTAINED, None), (BEYOND, 0.0)):
                for r in range(sustained_rounds):
                    order = configs if r % 2 == 0 else configs[::-1]
                    console.print(f"[bold]proxy[/] {', '.join(order)} one after the other, {n:,} POSTs each without a pause, 1 client"
                                  + ("" if lag is None else f", egressaudit_max_lag={lag:g}"))  # fmt: skip
                    runs += [
                        {"round": r, "group": group, **x} for x in _round(reqs, 1, order, work, sink_port, len(reqs), max(gap, 3.0), max_lag=lag)
                    ]
        prof = None
        if profile:
            console.print(f"[bold]proxy[/] mitmdump+egressaudit under cProfile, {n:,} POSTs, 1 client")
            pf = work / "mitmdump.prof"
            (pr,) = _round(reqs, 1, ["mitmdump+egressaudit"], work, sink_port, block, gap, profile=pf)
            prof = _profile_summary(pf, n)
            prof["median_ms_under_profiler"] = pr["median_ms"]
            prof["session_http_rows"] = pr.get("session_http_rows")
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()

    rows = []
    groups = list(dict.fromkeys(x["group"] for x in runs))
    for g in groups:
        for c in configs:
            rs = [x for x in runs if x["group"] == g and x["config"] == c]
            lat = [v for x in rs for v in x["latencies"]]
            row: dict[str, Any] = {"config": c, "group": g, "threads": rs[0]["threads"], "runs": len(rs), "requests": sum(x["requests"] for x in rs),
                                   "median_ms": 1000 * _pct(lat, 0.5), "p99_ms": 1000 * _pct(lat, 0.99),
                                   "rps": sum(x["requests"] for x in rs) / sum(x["wall_s"] for x in rs),
                                   "rps_runs": [x["rps"] for x in rs], "median_ms_runs": [x["median_ms"] for x in rs],
                                   "errors": sum(x["errors"] for x in rs),
                                   "error_examples": [e for x in rs for e in x["error_examples"]][:3]}  # fmt: skip
            if c != "direct":
                row["proxy_cpu_ms_per_req"] = sum(x["proxy_cpu_ms_per_req"] for x in rs) / len(rs)
                row["worker_cpu_ms_per_req"] = sum(x["worker_cpu_ms_per_req"] for x in rs) / len(rs)
                row["shutdown_s"] = max(x["shutdown_s"] for x in rs)
                row["exit_codes"] = sorted({x["exit_code"] for x in rs})
            if c == "mitmdump+egressaudit":
                row["session_http_rows"] = [x.get("session_http_rows") for x in rs]
                row["session_compacted"] = all(x.get("session_compacted") for x in rs)
                row["session_json_exchanges"] = [x.get("session_json_exchanges") for x in rs]
                row["worker_cpu_s_in_other_blocks"] = sum(x["worker_cpu_s_in_other_blocks"] for x in rs)
                row["worker_cpu_s_alongside"] = sum(x.get("worker_cpu_s_alongside", 0.0) for x in rs)
                row["settle_s_max"] = max(x["settle_s_max"] for x in rs)
                row["worker_cpu_s"] = sum(x["worker_cpu_s"] for x in rs)
            rows.append(row)
    bad = [f"{r['config']} x{r['group']}: {r['errors']:,} failed requests {r['error_examples'][:1]}, exit codes {r.get('exit_codes')}, "
           f"http rows {r.get('session_http_rows')}"
           for r in rows
           if r["errors"] or any(r.get("exit_codes") or [])
           or (r["config"] == "mitmdump+egressaudit" and any(v != r["requests"] // r["runs"] for v in r["session_http_rows"]))]  # fmt: skip
    if bad:  # a run that failed measures nothing: no ratios, nothing written to results.json
        raise SystemExit("proxy benchmark invalid:\n  " + "\n  ".join(bad) + "".join(
            f"\n  mitmdump log: {x['log_tail'][-400:]}" for x in runs if x.get("log_tail"))[:3000])  # fmt: skip
    overhead = {}
    for g in groups:
        a, b = _a_and_b(rows, g)
        overhead[g] = {"median_ratio": b["median_ms"] / a["median_ms"], "p99_ratio": b["p99_ms"] / a["p99_ms"],
                            "time_per_req_ratio": a["rps"] / b["rps"],
                            "cpu_per_req_ratio": b["proxy_cpu_ms_per_req"] / a["proxy_cpu_ms_per_req"],
                            "median_ratio_runs": [y / x for x, y in zip(a["median_ms_runs"], b["median_ms_runs"], strict=False)]}  # fmt: skip
        paired = []  # block k of (b) against block k of (a), same round: the same requests, seconds apart
        for r in sorted({x["round"] for x in runs if x["group"] == g}):
            ra = next(x for x in runs if x["group"] == g and x["round"] == r and x["config"] == "mitmdump")
            rb = next(x for x in runs if x["group"] == g and x["round"] == r and x["config"] == "mitmdump+egressaudit")
            paired += [y / x for x, y in zip(ra["block_medians"], rb["block_medians"], strict=True)]
        overhead[g]["paired_block_ratio"] = statistics.median(paired)
        overhead[g]["paired_blocks"] = len(paired)
        overhead[g]["worker_cpu_share_in_other_blocks"] = b["worker_cpu_s_in_other_blocks"] / max(b["worker_cpu_s"], 1e-9)
        overhead[g]["settle_s_max"] = b["settle_s_max"]
        overhead[g]["worker_cpu_share_alongside"] = b["worker_cpu_s_alongside"] / max(b["worker_cpu_s"], 1e-9)
        overhead[g]["target_applies"] = g != BEYOND
    return {
        "requests": n,
        "rounds": rounds,
        "block": block,
        "gap_s": gap,
        "idle_s": IDLE_S,
        "max_lag_s": MAX_LAG_S,
        "max_hold_mib": MAX_HOLD_BYTES >> 20,
        "body_bytes_min_median_max": [sizes[0], sizes[len(sizes) // 2], sizes[-1]],
        "decoded_bytes_min_median_max": [decoded[0], decoded[len(decoded) // 2], decoded[-1]],
        "gzip_requests": gz,
        "client": "urllib3 keep-alive, TCP_NODELAY (one connection per vendor host and thread), HTTPS via CONNECT, CA from a temporary confdir",
        "hosts": sorted({h for h, *_ in reqs}),
        "loadavg_before_after": [round(load0[0], 2), round(load1[0], 2)],
        "rows": rows,
        "overhead": overhead,
        "profile": prof,
        "target_overhead": 0.10,
    }


# -- environment and output ----------------------------------------------------------------
def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def _pkg(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "egressaudit": _pkg("egressaudit"),
        "scapy": _pkg("scapy"),
        "nfstream": _pkg("nfstream"),
        "mitmproxy": _pkg("mitmproxy"),
        "tshark": _version(["tshark", "--version"]),
        "tcpdump": _version(["tcpdump", "--version"]),
        "tcpreplay": _version(["tcpreplay", "--version"]),
    }


def _f(x: Any, fmt: str = ",.0f") -> str:
    return "" if x is None else format(x, fmt)


def tables(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, note) for each part that has results."""
    out = []
    ing = res.get("ingest")
    if ing:
        base = next((r for r in ing["rows"] if r["tool"].startswith("egressaudit")), None)
        rows = []
        for r in ing["rows"]:
            if "wall_s" not in r:
                rows.append([r["tool"], "", "", "", "", "", r.get("note", "")])
                continue
            ratio = r["wall_s"] / base["wall_s"] if base else None
            rows.append([r["tool"], _f(r["wall_s"], ".1f"), _f(r["pkts_per_s"]), _f(r["peak_rss_mb"]), _f(r.get("flows")),
                         _f(ratio, ".2f") + "x", r.get("note", "")])  # fmt: skip
        note = (f"{ing['packets']:,} packets, {ing['file_mb']:.0f} MB pcap ({ing['capture']}), {ing.get('flows', 0):,} egressaudit flows. "
                "'time vs egressaudit' > 1 means slower than egressaudit.")  # fmt: skip
        if "loadavg_before_after" in ing:
            note += f" Load average (1 min) before/after on {os.cpu_count()} cores: {ing['loadavg_before_after']}."
        out.append(("Offline ingest", ["tool", "wall s", "packets/s", "peak RSS MB", "flows", "time vs egressaudit", "note"], rows, note))
        a = ing.get("agreement")
        if a:
            rows = [[k.replace("_", " "), _f(v, ".2f") if isinstance(v, float) else _f(v)] for k, v in a.items()]
            note = ("Conversation key: transport + both address:port ends. tshark's side is its tcp.stream/udp.stream ids with IP bytes "
                    "(ip.len, or ipv6.plen + 40), taking the innermost layer of tunnelled frames (GTP-U, IP-in-IP) as egressaudit does; "
                    "egressaudit's side is flows.parquet. egressaudit ends a flow after 120 s idle or on a new SYN after FIN/RST; tshark "
                    "starts a new TCP stream on a SYN after close only. The builder shifts outer addresses only, so the copies of the one "
                    "GTP-U tunnel in the source captures (nDPI's zoom.pcap) carry the same inner conversation: one flow in both.")  # fmt: skip
            out.append(("Per-flow agreement with tshark", ["measure", "value"], rows, note))
    cap = res.get("capture")
    if cap and "rows" in cap:
        rows = []
        for r in cap["rows"]:
            rows.append([_f(r["rate"]), _f(r["sent"]), _f(r["sent_rate"]), _f(r["ours_frames"]),
                         _f(100 * r["ours_frames"] / max(r["sent"], 1), ".2f"),
                         _f(r["ours_drops"]), _f(r["tcpdump_frames"]), _f(100 * r["tcpdump_frames"] / max(r["sent"], 1), ".2f"),
                         _f(r["tcpdump_drops"]), _f(r["ours_frames"] / max(r["tcpdump_frames"], 1), ".3f")])  # fmt: skip
        note = (f"{cap['duration_s']:g} s per rate; sender: {cap['sender']}; buffers: {cap['buffers']}; both capture at once. "
                f"Highest lossless rate: egressaudit {cap['highest_lossless']:,} pkt/s, tcpdump {cap['highest_lossless_tcpdump']:,} pkt/s "
                "(of the rates tried).")  # fmt: skip
        out.append(("Live capture on lo", ["target pkt/s", "sent", "sent pkt/s", "egressaudit rx", "% of sent", "egressaudit kernel drops",
                                           "tcpdump rx", "% of sent", "tcpdump kernel drops", "rx vs tcpdump"], rows, note))  # fmt: skip
    elif cap:
        out.append(("Live capture on lo", ["status"], [[cap.get("error", "?")]], ""))
    w = res.get("writer")
    if w:
        rows = [["egressaudit.capture.live.PcapNgWriter", _f(w["egressaudit_s"], ".3f"), _f(w["frames"] / w["egressaudit_s"]), "1.00x",
                 w.get("egressaudit_capinfos", "")],
                ["scapy RawPcapNgWriter", _f(w["scapy_s"], ".3f"), _f(w["frames"] / w["scapy_s"]), _f(w["speedup"], ".2f") + "x",
                 w.get("scapy_capinfos", "")]]  # fmt: skip
        out.append(("pcapng writer", ["writer", "s", "frames/s", "time vs ours", "capinfos (count, first, last)"], rows,
                    f"{w['frames']:,} frames of {w['frame_bytes']} bytes."))  # fmt: skip
    rep = res.get("report")
    if rep:
        if "error" in rep:
            out.append(("egressaudit report", ["status"], [[rep["error"]]], ""))
        else:
            row = [_f(rep["flows"]), _f(rep["wall_s"], ".1f"), _f(rep["peak_rss_mb"])]
            out.append(("egressaudit report", ["flows", "wall s", "peak RSS MB"], [row], "On the session written by the ingest benchmark."))
    px = res.get("proxy")
    if px:
        out += _proxy_tables(px)
    ss = res.get("session")
    if ss:
        out += _session_tables(ss)
    from compare_bench import tables as compare_tables

    out += compare_tables(res)
    return out


def _a_and_b(rows: list[dict[str, Any]], group: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A group's (a) mitmdump row and (b) mitmdump+egressaudit row."""
    a = next(r for r in rows if r["group"] == group and r["config"] == "mitmdump")
    b = next(r for r in rows if r["group"] == group and r["config"] == "mitmdump+egressaudit")
    return a, b


def _round_interval(a: list[float], b: list[float], resamples: int = 10_000) -> tuple[float, float] | None:
    """95% bootstrap interval, resampling rounds (a round's (a) and (b) values together), of mean(b) / mean(a): how far the
    machine's round-to-round swing leaves the ratio uncertain.  None with fewer than 3 rounds."""
    import numpy as np

    if len(a) < 3 or len(a) != len(b):
        return None
    pick = np.random.default_rng(0).integers(0, len(a), size=(resamples, len(a)))
    ratios = np.asarray(b)[pick].mean(axis=1) / np.asarray(a)[pick].mean(axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def _proxy_intervals(px: dict[str, Any]) -> dict[str, dict[str, tuple[float, float] | None]]:
    """Per group: the round intervals of median latency and time per request ((b)/(a))."""
    out = {}
    for g in px["overhead"]:
        a, b = _a_and_b(px["rows"], g)
        out[g] = {"median": _round_interval(a["median_ms_runs"], b["median_ms_runs"]),
                  "time": _round_interval([1 / x for x in a["rps_runs"]], [1 / x for x in b["rps_runs"]])}  # fmt: skip
    return out


def _proxy_tables(px: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    out = []
    names = {"direct": "(c) direct to the sink, no proxy", "mitmdump": "(a) mitmdump, redirect only",
             "mitmdump+egressaudit": "(b) mitmdump + egressaudit addon"}  # fmt: skip
    rows = []
    for r in px["rows"]:
        recorded = ""
        if "session_http_rows" in r:
            ok = all(n == r["requests"] // r["runs"] for n in r["session_http_rows"]) and r["session_compacted"]
            recorded = ", ".join(_f(n) for n in r["session_http_rows"]) + (" (all, compacted)" if ok else " MISMATCH")
        rows.append([names[r["config"]], r["group"], f"{r['runs']} x {r['requests'] // r['runs']:,}", _f(r["median_ms"], ".2f"),
                     _f(r["p99_ms"], ".2f"), _f(r["rps"]), _f(r.get("proxy_cpu_ms_per_req"), ".2f"),
                     _f(r.get("worker_cpu_ms_per_req") or None, ".2f"), _f(r.get("shutdown_s"), ".1f"),
                     recorded, _f(r["errors"])])  # fmt: skip
    lo, mid, hi = px["body_bytes_min_median_max"]
    dlo, dmid, dhi = px.get("decoded_bytes_min_median_max", ("?", "?", "?"))
    note = (f"Telemetry POSTs to {', '.join(px['hosts'])} (redirected to one local HTTPS sink in every proxy run); bodies {dlo:,}/{dmid:,}/{dhi:,} "
            f"bytes of JSON (or Sentry envelope) before encoding, {lo:,}/{mid:,}/{hi:,} on the wire (min/median/max), {px['gzip_requests']:,} of "
            f"{px['requests']:,} gzip-encoded. Client: {px['client']}. "
            f"Each round starts a fresh mitmdump per proxy configuration (connection_strategy=lazy, ssl_insecure=true), then (c), (a) and (b) "
            f"send the same requests in interleaved blocks of {px.get('block', '?')} (c a b, b a c, ...) with {px.get('gap_s', '?')} s of quiet "
            "after each block, so that drift in the machine's speed hits all alike. 'proxy CPU' is mitmdump's user+system CPU time "
            "over the round divided by its requests, 'worker CPU' the same for its child processes (the addon's recorder process, "
            "which decodes and inventories off the proxy's event loop); 'shutdown' is SIGINT to exit (the addon compacts its tables then); "
            f"'http rows' is what each (b) session folder holds afterwards. The recorder records while the proxy is quiet, holding "
            f"exchanges for a busy proxy up to {px.get('max_lag_s', '?'):g} s (egressaudit_max_lag) and {px.get('max_hold_mib', '?')} MiB; "
            "after each of (b)'s blocks the benchmark waits for it to finish that block's work before the quiet gap (at most "
            f"{max((o.get('settle_s_max', 0) for o in px['overhead'].values()), default=0):.1f} s), so that no other configuration's block runs "
            f"alongside it. The '{SUSTAINED}' rounds send each configuration's {px['requests']:,} requests as one block without a pause (c a b, "
            f"then b a c, and so on), held and recorded afterwards; the '{BEYOND}' rounds do the same with egressaudit_max_lag=0, so the recorder "
            "records alongside: what traffic that never pauses for longer than the hold costs. "
            f"Load average (1 min) before/after: {px['loadavg_before_after']}.")  # fmt: skip
    out.append(("Proxy overhead", ["configuration", "client threads", "runs x POSTs", "median ms", "p99 ms", "requests/s", "proxy CPU ms/req",
                                   "worker CPU ms/req",
                                   "shutdown s", "http rows in session", "errors"], rows, note))  # fmt: skip
    rows = []
    intervals = _proxy_intervals(px)

    def span(iv: tuple[float, float] | None) -> str:
        return "" if iv is None else f"{iv[0]:.2f}-{iv[1]:.2f}x"

    for t, o in px["overhead"].items():
        runs = ", ".join(_f(x, ".2f") for x in o["median_ratio_runs"])
        leak = o.get("worker_cpu_share_in_other_blocks")
        along = o.get("worker_cpu_share_alongside")
        rows.append([t, _f(o["median_ratio"], ".2f") + "x", _f(o.get("paired_block_ratio"), ".2f") + "x", _f(o["p99_ratio"], ".2f") + "x",
                     _f(o["time_per_req_ratio"], ".2f") + "x", _f(o["cpu_per_req_ratio"], ".2f") + "x",
                     span(intervals[t]["median"]), span(intervals[t]["time"]), runs,
                     "" if along is None else f"{100 * along:.1f}%", "" if leak is None else f"{100 * leak:.1f}%"])  # fmt: skip
    worst_key = {"median latency": "median_ratio", "p99 latency": "p99_ratio", "time per request": "time_per_req_ratio"}
    worst_group, worst_name, worst = max(((g, name, o[k]) for g, o in px["overhead"].items() if o.get("target_applies", True)
                                          for name, k in worst_key.items()), key=lambda kv: kv[2])  # fmt: skip
    over = worst - 1
    verdict = "within" if over <= px["target_overhead"] else "above"
    tops = [(g, name, iv[1]) for g, o in px["overhead"].items() if o.get("target_applies", True)
            for name, iv in (("median latency", intervals[g]["median"]), ("time per request", intervals[g]["time"])) if iv]  # fmt: skip
    if tops:
        top_group, top_name, top = max(tops, key=lambda kv: kv[2])
        sure = (f"The upper ends of their 95% intervals over rounds reach {top:.2f}x ({top_name}, {top_group} client threads): "
                + ("the target holds even at the unlucky end of this machine's round-to-round swing. " if top - 1 <= px["target_overhead"]
                   else "this run's rounds cannot rule out more than the target; more rounds (or a quieter machine) narrow it. "))  # fmt: skip
    else:
        sure = ""
    beyond = px["overhead"].get(BEYOND)
    beyond_worst = None if beyond is None else max(beyond[k] for k in worst_key.values()) - 1
    note = (f"(b) / (a): 1.00x = no overhead. Target: at most {100 * px['target_overhead']:.0f}% overhead in median latency, p99 latency "
            f"and time per request. With the addon's defaults, where each of these runs fits in the hold ({px.get('max_lag_s', '?'):g} s, "
            f"{px.get('max_hold_mib', '?')} MiB) and the recorder works after the requests, the largest is {100 * over:.0f}% ({worst_name}, "
            f"{worst_group} client threads; {verdict} target). " + sure
            + ("" if beyond is None or beyond_worst is None else
               f"Past the hold ('{BEYOND}': the recorder works alongside the requests, as it does with the defaults under traffic that "
               f"never pauses for longer than the hold) median/p99/time per request are {beyond['median_ratio']:.2f}x/"
               f"{beyond['p99_ratio']:.2f}x/{beyond['time_per_req_ratio']:.2f}x ({'within' if beyond_worst <= px['target_overhead'] else 'above'} "
               "target on this 2-vCPU machine). ")
            + "'95% over rounds' is a bootstrap interval (10,000 resamples of the rounds, seed 0) of the mean of (b)'s per-round "
            "medians (or times per request) over (a)'s: rounds, not requests, are the independent samples on a machine whose speed "
            "drifts. 'paired blocks' is the median "
            "over all blocks of (b)'s block median over (a)'s block median for the same requests; 'time per request' is (a) requests/s "
            "over (b) requests/s. 'recorder CPU while (b) sends' is the share of (b)'s recorder CPU time spent while (b)'s own "
            "requests were in flight (the work that competes with them; the rest is done after them). "
            "'recorder CPU in other blocks' is the share of (b)'s recorder CPU time spent while (a) or (c) sent "
            "their blocks (work that would slow them instead of (b), flattering the ratios; it should be near 0%).")  # fmt: skip
    header = ["client threads", "median latency", "median latency, paired blocks", "p99 latency", "time per request", "proxy CPU per request",
              "median latency, 95% over rounds", "time per request, 95% over rounds", "median latency, per round",
              "recorder CPU while (b) sends", "recorder CPU in other blocks"]  # fmt: skip
    out.append(("Proxy overhead: addon vs no addon", header, rows, note))
    pr = px.get("profile")
    if pr:
        rows = [[x["where"], _f(x["calls"]), _f(x["cum_s"], ".2f"), _f(100 * x["share_of_busy"], ".1f")] for x in pr["top_cumulative"]]
        note = (f"One run of (b) with mitmdump under cProfile ({pr['requests']:,} POSTs, 1 client; median {pr['median_ms_under_profiler']:.2f} ms "
                f"under the profiler). Main-thread busy time {pr['busy_s']:.2f} s (idle epoll waits left out); the addon's hooks and flushes "
                "(EgressAudit.client_connected/requestheaders/response/error, Recorder.flush/close) "
                f"take {pr['addon_s']:.2f} s of it = {100 * pr['addon_share_of_busy']:.0f}%, "
                f"{pr['addon_ms_per_req']:.2f} ms per request. Share = of the busy time; cumulative times nest."
                + (f" From an earlier run (`{pr['from_earlier_run']}`): the latest had no --profile."
                   if pr.get("from_earlier_run") else ""))  # fmt: skip
        out.append(("Proxy overhead: where the addon's time goes (egressaudit functions, cumulative)", ["function", "calls", "cum s", "% of busy"],
                    rows, note))  # fmt: skip
        rows = [[x["where"], _f(x["calls"]), _f(x["own_s"], ".2f"), _f(100 * x["share_of_busy"], ".1f")] for x in pr["top_own"]]
        out.append(("Proxy overhead: heaviest functions by own time (whole mitmdump main thread)", ["function", "calls", "own s", "% of busy"],
                    rows, "Same profile; own time excludes callees."))  # fmt: skip
    return out


def write_markdown(all_res: dict[str, Any]) -> None:
    env = all_res.get("environment", {})
    lines = ["# Benchmarks", "", "Generated by `python benchmarks/run.py` (see its docstring); do not edit by hand.", "",
             "## Machine and versions", "", "| | |", "| --- | --- |"]  # fmt: skip
    for k, v in env.items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "## Commands", ""]
    for part, cmd in sorted(all_res.get("commands", {}).items()):
        lines.append(f"- {part}: `{cmd}` ({all_res.get('dates', {}).get(part, '')})")
    for title, header, rows, note in tables(all_res):
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        if note:
            lines += ["", note]
    lines.append("")
    RESULTS_MD.write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=None, help="packets in the large capture (default 2,000,000; --quick 300,000)")
    parts_all = ["ingest", "capture", "writer", "report", "proxy", "session", "compare"]
    ap.add_argument("--only", choices=parts_all, action="append", help="run only these parts (repeatable)")
    ap.add_argument("--quick", action="store_true", help="small capture, 5 s per live-capture rate")
    ap.add_argument("--duration", type=float, default=None, help="seconds per live-capture rate (default 60; --quick 5)")
    ap.add_argument("--rates", default="10000,50000,100000,200000", help="live-capture sender rates, packets/s")
    ap.add_argument("--scapy-slice", type=int, default=50_000, help="packets scapy dissects (then extrapolated)")
    ap.add_argument("--ingest-rounds", type=int, default=None, help="runs of egressaudit and NFStream, alternating (default 3; --quick 1)")
    ap.add_argument("--skip", action="append", default=[], choices=["nfstream", "tshark", "scapy"], help="leave a peer out of the ingest part")
    ap.add_argument("--proxy-requests", type=int, default=None, help="POSTs per proxy run (default 2,000; --quick 300)")
    ap.add_argument("--proxy-rounds", type=int, default=None, help="rounds of the three single-client proxy runs (default 3; --quick 1)")
    ap.add_argument("--proxy-threads", type=int, default=8, help="client threads of the concurrent proxy run (1: none)")
    ap.add_argument("--proxy-block", type=int, default=200, help="requests per interleaved block of the proxy runs")
    ap.add_argument("--proxy-gap", type=float, default=1.3, help="seconds of quiet after each proxy block (the recorder does a block's work in it)")
    ap.add_argument("--no-proxy-sustained", action="store_true", help="leave out the proxy rounds that send all requests without a pause")
    ap.add_argument(
        "--proxy-sustained-rounds", type=int, default=None, help="rounds of each no-pause group, in alternating orders (default 4; --quick 2)"
    )
    ap.add_argument("--profile", action="store_true", help="proxy part: one more run of the addon under cProfile, summarised")
    ap.add_argument("--session-seconds", type=float, default=None, help="seconds of replayed call per footprint run (default 60; --quick 10)")
    ap.add_argument("--session-idle", type=float, default=None, help="seconds of the idle footprint runs (default 30; --quick 5)")
    ap.add_argument("--session-multipliers", default="1,2.5", help="replay speeds of the call for the footprint runs (1 = its own timing)")
    ap.add_argument(
        "--session-hour", type=float, default=None, help="seconds of call whose packets precede the finalisation (default 3600; --quick 300)"
    )
    ap.add_argument("--session-pps", type=int, default=20_000, help="packet rate of the finalisation's replay (halved while the kernel drops)")
    ap.add_argument("--compare-sessions", type=int, default=None, help="made-up sessions the compare part compares (default 1,000; --quick 100)")
    args = ap.parse_args()
    packets = args.packets or (300_000 if args.quick else 2_000_000)
    duration = args.duration or (5.0 if args.quick else 60.0)
    parts = args.only or ["writer", "ingest", "report", "proxy", "capture", "session"]
    env = environment()
    cmd = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    session_dir: Path | None = None
    all_res: dict[str, Any] = {}
    for part in parts:
        if part == "writer":
            res = bench_writer()
        elif part == "ingest":
            res = bench_ingest(packets, args.scapy_slice, set(args.skip), args.ingest_rounds or (1 if args.quick else 3))
            session_dir = Path(res.pop("session_dir"))
        elif part == "report":
            res = bench_report(session_dir, packets)
        elif part == "capture":
            res = bench_capture([int(x) for x in args.rates.split(",")], duration)
        elif part == "proxy":
            res = bench_proxy(args.proxy_requests or (300 if args.quick else 2000), args.proxy_rounds or (1 if args.quick else 3),
                              args.proxy_threads, args.profile, args.proxy_block, args.proxy_gap, not args.no_proxy_sustained,
                              args.proxy_sustained_rounds or (2 if args.quick else 4))  # fmt: skip
        elif part == "session":
            res = bench_session(args.session_seconds or (10.0 if args.quick else 60.0), args.session_idle or (5.0 if args.quick else 30.0),
                                [float(x) for x in args.session_multipliers.split(",")], args.session_hour or (300.0 if args.quick else 3600.0),
                                args.session_pps)  # fmt: skip
        elif part == "compare":
            from compare_bench import bench_compare

            res = bench_compare(measure, args.compare_sessions or (100 if args.quick else 1000))
        # re-read: another run (another part) may have written its results since this one started
        all_res = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
        earlier = all_res.get("proxy", {}).get("profile")
        if part == "proxy" and res.get("profile") is None and earlier:  # a run without --profile keeps the last profile, marked
            res["profile"] = {**earlier, "from_earlier_run": earlier.get("from_earlier_run") or all_res.get("commands", {}).get("proxy", "?")}
        all_res["environment"] = env
        all_res[part] = res
        all_res.setdefault("commands", {})[part] = cmd.strip()
        all_res.setdefault("dates", {})[part] = time.strftime("%Y-%m-%d")
        tmp = RESULTS_JSON.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(all_res, indent=1, default=str))
        tmp.replace(RESULTS_JSON)
        write_markdown(all_res)
    for title, header, rows, note in tables(all_res):
        t = Table(title=title, caption=note, caption_justify="left")
        for h in header:
            t.add_column(h)
        for r in rows:
            t.add_row(*r)
        console.print(t)
    console.print(f"-> {RESULTS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
