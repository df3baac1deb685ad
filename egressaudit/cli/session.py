"""``egressaudit session ...``: the audited call session: start, mark, recover, cleanup."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import select
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from egressaudit.cli.common import (
    Client,
    Force,
    Label,
    LocalNet,
    Quiet,
    Signatures,
    check_cidr,
    console,
    err,
    fail,
    handled,
    say,
    signature_files,
    warn,
)
from egressaudit.errors import EXIT_INCOMPLETE, EXIT_USAGE
from egressaudit.taxonomy import CallState

if TYPE_CHECKING:
    from egressaudit.audit.call import Running

app = typer.Typer(
    name="session",
    help="An audited call session: capture and proxy together (start), mark what happens in the call (mark).",
    no_args_is_help=True,
)

KEYS: dict[str, str] = {
    "j": "joining", "b": "lobby", "t": "talking", "m": "muted", "u": "unmuted", "c": "camera-on", "C": "camera-off",
    "s": "screen-share-start", "S": "screen-share-stop", "h": "chat", "p": "upload", "i": "idle", "l": "left",
}  # fmt: skip
"""Keys of the live view and the state each marks."""


def _duration(text: str | None) -> float | None:
    """``90``, ``90s``, ``30m``, ``1h30m`` as seconds."""
    if text is None:
        return None
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or parts is None or not any(parts.groups()):
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 90, 90s, 30m, 1h30m)")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    total = h * 3600 + m * 60 + s
    if total <= 0:
        raise typer.BadParameter("must be more than 0 s")
    return total


def _check_ips(values: list[str] | None) -> list[str] | None:
    for v in values or ():
        try:
            ipaddress.ip_address(v)
        except ValueError as e:
            raise typer.BadParameter(f"{v!r} is not an IP address") from e
    return values


def _size(text: str | None) -> int | None:
    """``500m``, ``2G``, ``100000`` as bytes."""
    if text is None:
        return None
    from mitmproxy.utils.human import parse_size

    try:
        n = parse_size(text.strip().lower())
    except ValueError:
        n = None
    if not n or n <= 0:
        raise typer.BadParameter(f"{text!r} is not a size (e.g. 500m, 2g)")
    return n


@app.command(context_settings={"allow_interspersed_args": False})
def start(
    out: Annotated[Path, typer.Option("--out", "-o", help="Session folder to write (created; refused if it holds a session, see --force).")],
    command: Annotated[
        list[str] | None, typer.Argument(help="The client to start (after --), with the proxy and CA in its environment.", show_default=False)
    ] = None,
    client: Client = None,
    label: Label = None,
    iface: Annotated[
        str | None, typer.Option("--iface", "-i", help="Interface to capture on. Default: the default route's (with --netns: the client's).")
    ] = None,
    duration: Annotated[str | None, typer.Option("--duration", help="End by itself after this long (90s, 30m, 1h). Default: Ctrl-C.")] = None,
    bpf: Annotated[str | None, typer.Option("--filter", help="BPF capture filter (tcpdump syntax).")] = None,
    rotate_size: Annotated[
        str | None, typer.Option("--rotate-size", help="Start a new pcapng file after this much captured (e.g. 500m, 2g).")
    ] = None,
    rotate_time: Annotated[str | None, typer.Option("--rotate-time", help="Start a new pcapng file after this long (e.g. 10m).")] = None,
    netns: Annotated[
        bool,
        typer.Option(
            "--netns",
            help="Run the client in a network namespace of its own: every packet is its, TCP 80/443 goes through the proxy transparently.",
        ),
    ] = False,
    allow_quic: Annotated[bool, typer.Option("--allow-quic", help="With --netns: let QUIC (UDP 443) through (default: blocked).")] = False,
    redirect_port: Annotated[
        list[int] | None,
        typer.Option("--redirect-port", min=1, max=65535, help="With --netns: also hand this TCP port to the proxy (TLS or HTTP there; repeatable)."),
    ] = None,
    netns_allow: Annotated[
        list[str] | None,
        typer.Option("--netns-allow", help="With --netns: let the client reach only these networks (CIDR; repeatable).", callback=check_cidr),
    ] = None,
    dns: Annotated[
        list[str] | None, typer.Option("--dns", help="With --netns: resolver address for the client (default: the host's).", callback=_check_ips)
    ] = None,
    process: Annotated[
        str | None, typer.Option("--process", help="Without --netns: keep only flows and exchanges of processes named NAME and their children.")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Proxy port (default: a free one).", min=0, max=65535)] = 0,
    keep_values: Annotated[bool, typer.Option("--keep-values", help="Store field values in clear (default: salted hashes).")] = False,
    keep_query: Annotated[bool, typer.Option("--keep-query", help="Keep query-string values (default: redacted).")] = False,
    keep_bodies: Annotated[bool, typer.Option("--keep-bodies", help="Also save whole flows, bodies included, to OUT/flows.mitm.")] = False,
    client_version: Annotated[str | None, typer.Option("--client-version", help="The client's version, for the manifest.")] = None,
    proxy_set: Annotated[
        list[str] | None, typer.Option("--proxy-set", help="A mitmproxy option for the proxy, KEY=VALUE (repeatable), e.g. ssl_insecure=true.")
    ] = None,
    local_net: LocalNet = None,
    extra_signatures: Signatures = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Capture and proxy one call: set up, print what the client needs (or start it: -- COMMAND), record until Ctrl-C.

    Keys in the live view mark what happens: j joining, b lobby, t talking, m muted, u unmuted, c camera-on,
    C camera-off, s screen-share-start, S screen-share-stop, h chat, p upload, i idle, l left (or
    `egressaudit session mark STATE` from another terminal).  Ctrl-C, SIGTERM, SIGHUP, --duration or the client's exit
    end it: the session is finished and summarised."""
    from egressaudit.audit.call import CallOptions, record_call

    for kv in proxy_set or ():
        if "=" not in kv or kv.startswith(("egressaudit_", "confdir=")):
            raise fail(f"--proxy-set: {kv!r}: give KEY=VALUE of a mitmproxy option (not egressaudit_* or confdir: the session sets them)", EXIT_USAGE)
    if len(extra_signatures or ()) > 1:
        raise fail("--signatures: session start takes one file or folder (put several files in one folder)", EXIT_USAGE)
    files = signature_files(extra_signatures)
    opts = CallOptions(
        out=out, command=list(command or ()), client=client, label=label, iface=iface, bpf=bpf, duration=_duration(duration),
        netns=netns, allow_quic=allow_quic, netns_allow=list(netns_allow or ()), dns=list(dns or ()), process=process, port=port,
        keep_values=keep_values, keep_query=keep_query, keep_bodies=keep_bodies, signature_files=files,
        signatures_path=extra_signatures[0] if extra_signatures else None, force=force, local_nets=list(local_net or ()),
        client_version=client_version, proxy_options=list(proxy_set or ()), redirect_ports=list(redirect_port or ()), rotate_bytes=_size(rotate_size),
        rotate_seconds=_duration(rotate_time),
    )  # fmt: skip
    view = _View(out, quiet)
    with handled(out):
        with view.running():
            m = record_call(opts, say=view.say, tick=view.tick)
    if not quiet:
        _print_summary(m, out)
    from egressaudit.audit.call import problems

    lacking = problems(m)
    if lacking:
        raise fail(f"{out}: recording incomplete: " + "; ".join(lacking), EXIT_INCOMPLETE)


class _View:
    """The live view: a refreshing rich panel on a terminal (keys mark states), one line a second otherwise."""

    def __init__(self, out: Path, quiet: bool) -> None:
        self.out, self.quiet = out, quiet
        self.tty = sys.stdout.isatty() and not quiet
        self.live: Live | None = None
        self.stop = threading.Event()

    def say(self, line: str) -> None:
        if self.quiet and not line.startswith(("removed", "warning")):
            return
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            err.print(line, markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if not self.tty:
            yield
            return
        with _cbreak(sys.stdin) as keyed:
            if keyed:  # (a daemon: it ends with the view, or is left blocked on a terminal that went away)
                threading.Thread(target=self._read_keys, name="egressaudit-keys", daemon=True).start()
            try:
                with Live(Text("starting..."), console=console, refresh_per_second=2, transient=False) as live:
                    self.live = live
                    yield
            finally:
                self.live = None
                self.stop.set()

    def _read_keys(self) -> None:
        from egressaudit.session.markers import add_marker

        fd = sys.stdin.fileno()
        while not self.stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                got = os.read(fd, 1)
            except OSError:  # the terminal hung up
                return
            if not got:
                return
            ch = got.decode("ascii", "replace")
            state = KEYS.get(ch)
            if state is None:
                continue
            try:
                add_marker(self.out, state, source="live")
            except Exception as e:  # noqa: BLE001 - a marker that cannot be written is said, the session goes on
                self.say(f"warning: cannot mark {state}: {e}")

    def tick(self, r: Running) -> None:
        live, s = r.live, r.live.stats
        if s is None:
            return
        rate = sum(live.rate_by_class.values())
        if self.live is None:
            if not self.quiet:  # one line a second
                classes = " ".join(f"{k}={v / 1e3:.1f}kB/s" for k, v in sorted(live.rate_by_class.items()))
                err.print(
                    f"{s.elapsed:7.0f}s packets={s.frames:,} drops={s.kernel_drops:,} flows={s.flows_live:,} http={live.exchanges:,} "
                    f"egress={rate / 1e3:.1f}kB/s {classes}",
                    markup=False, highlight=False, soft_wrap=True,
                )  # fmt: skip
            return
        self.live.update(self._panel(r))

    def _panel(self, r: Running) -> Group:
        live, s = r.live, r.live.stats
        assert s is not None
        head = Text(
            f"{self.out}  {s.elapsed:.0f}s  packets {s.frames:,}  dropped {s.kernel_drops:,}  live flows {s.flows_live:,}  "
            f"HTTP exchanges {live.exchanges:,}  "
            f"stop: Ctrl-C  keys: " + " ".join(f"{k}={v}" for k, v in KEYS.items())
        )
        rates = Table(title="egress now (bytes/s)", show_edge=False)
        rates.add_column("data class")
        rates.add_column("B/s", justify="right")
        for k, v in sorted(live.rate_by_class.items(), key=lambda kv: -kv[1]):
            rates.add_row(k, f"{v:,.0f}")
        cats = Table(title="by category", show_edge=False)
        cats.add_column("category")
        cats.add_column("B/s", justify="right")
        for k, v in sorted(live.rate_by_category.items(), key=lambda kv: -kv[1]):
            cats.add_row(k, f"{v:,.0f}")
        top = Table(title="top destinations (egress bytes)", show_edge=False)
        for c in ("destination", "vendor", "party", "bytes"):
            top.add_column(c, justify="right" if c == "bytes" else "left")
        for dest, vendor, party, n in live.top:
            top.add_row(dest, vendor or "-", party, f"{n:,}")
        marks = Text("markers: " + (", ".join(f"{t} {st}" for t, st in live.markers[-6:]) or "none yet (press a key)"))
        return Group(head, rates, cats, top, marks)


@contextlib.contextmanager
def _cbreak(stream: Any) -> Iterator[bool]:
    """The terminal in cbreak mode (keys arrive one by one, unechoed) for the block; False when it is no terminal."""
    try:
        import termios
        import tty

        fd = stream.fileno()
        old = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, AttributeError):
        yield False
        return
    except termios.error:  # (stdin is no terminal: no keys, the view still runs)
        yield False
        return
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        with contextlib.suppress(OSError, termios.error):  # (a terminal that hung up: nothing to restore)
            termios.tcsetattr(fd, termios.TCSADRAIN, old)


def _print_summary(m: Any, out: Path) -> None:
    from egressaudit.audit.call import summary
    from egressaudit.report.measures import human_bytes

    with handled():
        s = summary(m, out)
    t = Table(title=Text(f"egressaudit session -> {out}"), show_header=False)
    t.add_row("ended by", str(s["stopped_by"]))
    t.add_row("duration", f"{s['duration_s'] or 0:.0f} s")
    t.add_row("packets", f"{s['packets']:,} ({s['drops'] or 0:,} dropped by the kernel)")
    t.add_row("flows / HTTP exchanges", f"{s['flows']:,} / {s['exchanges']:,}")
    t.add_row("audited client", str(s["client"] or "not detected (use --client)"))
    for k, v in s["egress_by_class"].items():
        t.add_row(f"egress {k}", human_bytes(v))
    for d, v, p, n in s["top"]:
        t.add_row(f"to {d}", f"{human_bytes(n)}  {v or '-'} ({p} party)")
    t.add_row("markers", f"{s['markers']:,}")
    t.add_row("attributed", ", ".join(f"{tab}: " + ", ".join(f"{k} {n:,}" for k, n in c.items()) for tab, c in (s["attributed"] or {}).items()))
    console.print(t)
    say(f"next: egressaudit report {out}")


@app.command()
def mark(
    state: Annotated[
        str,
        typer.Argument(help=f"What is happening from now on: {', '.join(s.value for s in CallState)}, or a word of your own.", show_default=False),
    ],
    note: Annotated[str | None, typer.Option("--note", help="Free text kept with the marker.")] = None,
    session_dir: Annotated[
        Path,
        typer.Option("--session", "-s", envvar="EGRESSAUDIT_SESSION", help="Session folder (default: $EGRESSAUDIT_SESSION).", show_default=False),
    ] = Path("."),
) -> None:
    """Mark a call state in a session (a finished one, or one being recorded): the report splits its measures by them."""
    from egressaudit.session.markers import add_marker

    with handled(session_dir):
        row = add_marker(session_dir, state, note=note)
    say(f"{row['ts']:%H:%M:%S} {row['state']} -> {session_dir}")


@app.command()
def recover(
    session_dir: Annotated[Path, typer.Argument(help="A session folder whose `session start` was killed.", show_default=False)],
) -> None:
    """Finish a session whose processes were killed (SIGKILL, a crash, a power cut) from what reached disk; say what was lost."""
    from egressaudit.audit.call import needs_recovery
    from egressaudit.audit.call import recover as recover_call

    if not session_dir.is_dir():
        raise fail(f"{session_dir}: not a folder", 3)
    with handled(session_dir):
        if not needs_recovery(session_dir):
            from egressaudit.audit.live import recover as recover_capture

            m = recover_capture(session_dir, announce=warn)
            if m is None:
                say(f"{session_dir}: nothing to recover (the session finished)")
                return
        else:
            m = recover_call(session_dir, announce=warn)
    assert m is not None
    say(f"{session_dir}: {m.state}; next: egressaudit report {session_dir}")


@app.command()
def cleanup(
    everything: Annotated[bool, typer.Option("--all", help="Also namespaces of sessions still running (they lose their network).")] = False,
) -> None:
    """Remove the network namespaces, veth pairs, iptables rules and resolver files that killed sessions left."""
    from egressaudit.netns import cleanup as clean
    from egressaudit.netns import unavailable

    why = unavailable()
    if why is not None:
        raise fail(f"cleanup: {why}", 3)
    removed = clean(everything=everything)
    say("removed: " + ", ".join(removed) if removed else "nothing to remove")
