"""``egressaudit proxy``: mitmdump with the egressaudit addon, recording into a session folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from egressaudit.cli.common import Add, Client, Force, Label, err, fail, handled
from egressaudit.errors import EXIT_INTERNAL, EXIT_OUTPUT, EXIT_USAGE

app = typer.Typer()


@app.command()
def proxy(
    out: Annotated[Path, typer.Option("--out", "-o", help="Session folder to write http.parquet and fields.parquet into.")],
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 8080,
    listen_host: Annotated[str, typer.Option("--listen-host", help="Address to listen on. Default: loopback only.")] = "127.0.0.1",
    mode: Annotated[
        list[str] | None,
        typer.Option("--mode", "-m", help="mitmproxy mode: regular (default), upstream:URL, reverse:URL, transparent, wireguard; repeatable."),
    ] = None,
    client: Client = None,
    keep_values: Annotated[bool, typer.Option("--keep-values", help="Store field values in clear (default: salted hashes).")] = False,
    keep_query: Annotated[bool, typer.Option("--keep-query", help="Keep query-string values (default: redacted).")] = False,
    keep_bodies: Annotated[bool, typer.Option("--keep-bodies", help="Also save complete flows with bodies to OUT/flows.mitm.")] = False,
    confdir: Annotated[
        Path | None, typer.Option("--confdir", help="mitmproxy configuration folder holding the CA (default: ~/.egressaudit/mitmproxy, mode 0700).")
    ] = None,
    label: Label = None,
    force: Force = False,
    add: Add = False,
    extra: Annotated[list[str] | None, typer.Argument(help="Further mitmdump arguments, after --.", show_default=False)] = None,
) -> None:
    """Run mitmproxy (mitmdump) with the egressaudit addon, recording every HTTP exchange into OUT.

    OUT must not hold a session already, unless --force (replace it) or --add (go on recording into it, e.g. after
    a proxy that was killed)."""
    from mitmproxy.proxy.mode_specs import ProxyMode

    from egressaudit.http.proxy import ProxyError, ca_instructions, ensure_ca, run_mitmdump
    from egressaudit.session import Claim, manifest, read_rows
    from egressaudit.session.store import unrecorded

    modes = mode or ["regular"]
    for m in modes:
        try:
            ProxyMode.parse(m)
        except ValueError as e:
            raise fail(f"--mode {m}: {e}", EXIT_USAGE) from None
    # (wireguard and local listen elsewhere, MODE@PORT on its own port, "" on every address: mitmdump checks those)
    if listen_host and not any(m.startswith(("wireguard", "local")) or "@" in m for m in modes):
        _check_listen(listen_host, port)
    with handled(out):
        claim = Claim(out, force=force, add=add).take()
    try:
        conf = ensure_ca(confdir)
        if label is not None:
            manifest.update(out, lambda m: setattr(m, "label", label))
    except ProxyError as e:
        claim.rollback()
        raise fail(str(e), e.exit_code) from None
    except OSError as e:
        claim.rollback()
        raise fail(f"{out}: cannot write: {e.strerror or e}", EXIT_OUTPUT) from None
    err.print(ca_instructions(conf, listen_host, port), highlight=False, soft_wrap=True, markup=False)
    code = run_mitmdump(
        out, conf, port=port, listen_host=listen_host, modes=modes, client=client, keep_values=keep_values,
        keep_query=keep_query, keep_bodies=keep_bodies, extra=extra or [],
    )  # fmt: skip
    if code:
        try:
            recorded = read_rows(out, "http").num_rows > 0 or unrecorded(out) > 0
        except Exception:  # noqa: BLE001 - a table that cannot be read may hold something: keep the folder
            recorded = True
        if not recorded:
            if code == EXIT_INTERNAL:
                # mitmdump refused its arguments (the line above says which) before the addon started: a usage error
                code = EXIT_USAGE
            claim.rollback()
            raise typer.Exit(code)
    claim.commit()
    raise typer.Exit(code)


def _check_listen(host: str, port: int) -> None:
    """Exit 2 with one line when the proxy could not listen on host:port (mitmdump would exit 1 with its own message)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise fail(f"--listen-host: cannot listen on {host}: {e.strerror or e}", EXIT_USAGE) from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mitmproxy's server does
        try:
            s.bind(addr)
        except OSError as e:
            raise fail(f"--port: cannot listen on {host}:{port}: {e.strerror or e}", EXIT_USAGE) from None
