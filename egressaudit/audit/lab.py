"""``egressaudit lab``: a scripted call in the local conference lab, recorded as an audited session.

The world (:class:`egressaudit.lab.world.World`: Janus, DNS and the sinks in a "cloud" namespace) starts; the
participants other than the audited one join from namespaces of their own; the audited participant (number 1) is a
Chromium started inside the namespace of an audited session (:func:`egressaudit.audit.call.record_call` with
``--netns``: exactly what ``egressaudit session start --netns`` runs), trusting the session's proxy CA; the script
(:mod:`egressaudit.lab.script`) is played through every page, writing the audited participant's markers; then the
session ends and is finished as any other.  Everything stays inside the namespaces the lab and the session made.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egressaudit.audit.call import CallOptions, Running, record_call
from egressaudit.session import Manifest, manifest
from egressaudit.session.markers import add_marker

READY_S = 90.0
"""Seconds a participant's page may take to load and say it is ready."""


@dataclass
class LabRun:
    manifest: Manifest
    log: list[dict[str, Any]] = field(default_factory=list)
    sink_records: Path | None = None
    errors: list[str] = field(default_factory=list)


def run_lab(
    out: Path,
    *,
    script: str = "default",
    participants: int | None = None,
    duration: float | None = None,
    force: bool = False,
    say: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> LabRun:
    """One scripted lab call into the session folder ``out``; the finished session's manifest and the script's log."""
    from egressaudit.http.proxy import ensure_ca, spki_hash
    from egressaudit.lab import janus
    from egressaudit.lab import script as lab_script
    from egressaudit.lab.cdp import Browser, CdpError
    from egressaudit.lab.world import World

    sc = lab_script.load(script)
    if participants is not None:
        sc.participants = participants
    if duration is not None:  # the script's timeline, stretched or squeezed to the call's length
        factor = duration / sc.length
        for step in sc.steps:
            step.at = round(step.at * factor, 3)
        sc.duration = duration
    work = Path(tempfile.mkdtemp(prefix="egressaudit-lab-"))
    browsers: dict[int, Browser] = {}
    stop = threading.Event()
    run = LabRun(manifest=Manifest(session_id=out.name))
    try:
        with World(work / "world") as world:
            world.start()
            say(f"lab: world up (cloud {world.ip}); {sc.participants} participants, script {sc.name} ({sc.length:g} s)")
            for n in range(2, sc.participants + 1):
                ns = world.participant()
                args = world.chromium_args(work / f"profile-{n}", world.page_url(n), pipe=False)
                browsers[n] = Browser(args, prefix=ns.exec, env=world.chromium_env(work / f"home-{n}"))
            mitm_spki = spki_hash(ensure_ca(None) / "mitmproxy-ca-cert.pem")

            def play() -> None:
                try:
                    for b in browsers.values():
                        b.wait_for("typeof lab === 'object' && lab.ready !== undefined", timeout=READY_S)
                        b.evaluate("lab.ready", timeout=READY_S)
                    run.log = lab_script.play(
                        sc, browsers, mark=lambda st, ts, note: add_marker(out, st, ts=ts, note=note, source="lab"), say=say
                    )
                except (CdpError, OSError) as e:
                    run.errors.append(f"the script stopped: {e}")
                    say(f"lab: the script stopped: {e}")
                finally:
                    for b in browsers.values():  # (before the session stops: the proxy then ends with no connection open)
                        b.close()
                    stop.set()

            def started(r: Running) -> None:
                assert r.ns is not None
                args = world.chromium_args(work / "profile-1", world.page_url(1), extra_spki=[mitm_spki], pipe=False)
                browsers[1] = Browser(args, prefix=r.ns.exec, env=world.chromium_env(work / "home-1"))
                threading.Thread(target=play, name="lab-script", daemon=True).start()

            opts = CallOptions(
                out=out, netns=True, netns_allow=[world.subnet], dns=[world.dns], force=force, label=f"lab: {sc.name}",
                proxy_options=[f"ssl_verify_upstream_trusted_ca={world.ca_file}"], signature_files=[world.signatures_file],
                signatures_path=world.signatures_file, client="lab", command=[], redirect_ports=[janus.WSS_PORT],
            )  # fmt: skip
            record_call(opts, say=say, started=started, stop=stop)
            for b in browsers.values():
                b.close()
            browsers.clear()
            run.sink_records = out / "lab-sink.jsonl"
            if world.records_file.exists():
                shutil.copyfile(world.records_file, run.sink_records)
                run.sink_records.chmod(0o600)

            # the audited page's own account of each step (the times it was asked and done, what it answered: the
            # SSRCs it sends with, the upload's size), kept as the truth the session's tables are checked against
            audited = sorted((e for e in run.log if e.get("participant") == lab_script.AUDITED), key=lambda e: e["asked"])
            truth = [{k: e[k] for k in ("do", "at", "asked", "done", "result", "error") if k in e} for e in audited]

            def lab_section(mm: Manifest) -> None:
                lab = {"script": sc.model_dump(), "participants": sc.participants, "errors": run.errors, "audited": truth}
                mm.call = {**(mm.call or {}), "lab": lab}

            manifest.update(out, lab_section)
            run.manifest, _ = manifest.read(out)
    finally:
        for b in browsers.values():
            b.close()
        shutil.rmtree(work, ignore_errors=True)
    return run
