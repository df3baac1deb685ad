"""The lab's world with real parts (issue 14, points 1 and 2): Janus, dnsmasq and the HTTPS sink in the cloud
namespace, two headless Chromiums in participants' namespaces loading the conference page, driven over DevTools
pipes through the page's ``window.lab`` hooks.  Both join the videoroom, publish and receive media, chat over the
textroom, upload a file and share a screen; the SDKs' telemetry reaches the sinks; closing leaves nothing behind."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from egressaudit.lab import world as labworld
from egressaudit.lab.cdp import Browser
from egressaudit.lab.world import PLANTED, World

pytestmark = [
    pytest.mark.skipif(labworld.unavailable() is not None, reason=str(labworld.unavailable())),
    pytest.mark.skipif(labworld.chromium_unavailable() is not None, reason=str(labworld.chromium_unavailable())),
    pytest.mark.timeout(120),
]


def _lab_state() -> tuple[list[str], list[str]]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    procs = subprocess.run(["pgrep", "-af", "janus -C|dnsmasq --keep-in-foreground|egressaudit.lab.sink"], capture_output=True, text=True).stdout
    return [n for n in names if n.startswith("ealab-")], [ln for ln in procs.splitlines() if "pgrep" not in ln]


def test_two_participants_call_chat_upload_share_and_telemetry(tmp_path: Path) -> None:
    before_ns, before_procs = _lab_state()
    t0 = time.monotonic()
    browsers: list[Browser] = []
    with World(tmp_path / "world") as world:
        assert world.started_s is not None and world.started_s < 15
        assert world.session_args()[:3] == ["--netns", "--netns-allow", world.subnet]
        assert world.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        try:
            for n in (1, 2):
                ns = world.participant()
                args = world.chromium_args(tmp_path / f"profile-{n}", world.page_url(n), pipe=False)
                browsers.append(Browser(args, prefix=ns.exec, env=world.chromium_env(tmp_path / f"home-{n}")))
            for b in browsers:
                b.attach()
                assert b.wait_for("window.lab && lab.ready", timeout=20)
            for b in browsers:
                joined = b.evaluate("lab.join()", timeout=30)  # the SSRCs it sends with
                assert len(joined["ssrcs"]["audio"]) == len(joined["ssrcs"]["video"]) == 1, joined
            # both see the other's feed and receive its media
            states: list[dict[str, Any]] = []
            for b in browsers:
                b.wait_for("lab.state().then(s => s.subscribed === 1 && s.stats.packetsReceived > 50)", timeout=20)
            assert browsers[0].evaluate("lab.chat('hello from participant 1')") is True
            assert browsers[1].evaluate("lab.upload(150000)")["bytes"] > 150000
            browsers[1].wait_for("lab.state().then(s => s.chatReceived.some(m => m.text === 'hello from participant 1'))", timeout=10)
            assert browsers[0].evaluate("lab.mute()") is True
            assert browsers[0].evaluate("lab.cameraOff()") is True
            assert browsers[0].evaluate("lab.state()")["audio"] is False
            assert browsers[0].evaluate("lab.state()")["videoSending"] is False
            assert browsers[0].evaluate("lab.cameraOn()") is True and browsers[0].evaluate("lab.unmute()") is True
            assert browsers[1].evaluate("lab.shareStart()", timeout=20) is True
            assert browsers[1].evaluate("lab.state()")["sharing"] is True
            assert browsers[1].evaluate("lab.shareStop()") is True
            states = [b.evaluate("lab.state()") for b in browsers]
            for b in browsers:
                assert b.evaluate("lab.leave()", timeout=20) is True
        finally:
            for b in browsers:
                b.close()
        records = world.records()
    took = time.monotonic() - t0

    for s in states:
        assert s["joined"] and not s["errors"], s
        assert s["stats"]["audioBytesSent"] > 1000 and s["stats"]["videoBytesSent"] > 10000, s["stats"]
        assert s["stats"]["bytesReceived"] > 10000 and s["stats"]["framesDecoded"] > 10, s["stats"]
    kinds: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        kinds.setdefault(r["kind"], []).append(r)
    assert {r["path"] for r in kinds["page"] if r["status"] == 200} >= {"/dist/lab.js"}
    uploads = kinds["upload"]
    assert len(uploads) == 1 and uploads[0]["host"] == "upload.lab.test" and uploads[0]["body_bytes"] > 150000
    sentry = kinds["sentry"]
    assert {r["host"] for r in sentry} == {"o4509.ingest.sentry.io"}
    items = {i for r in sentry for i in r["items"]}
    assert {"session", "event"} <= items, items
    amp = kinds["amplitude"]
    assert {r["host"] for r in amp} == {"api2.amplitude.com"} and sum(r["events"] for r in amp) >= 10  # (one per hook)
    ws = kinds["websocket"]
    assert len(ws) == 2 and {r["host"] for r in ws} == {"telemetry.lab.test"} and all(r["messages"] > 5 for r in ws), ws
    assert PLANTED["email"] == "alice@lab.test"
    print(f"\nlab world: {took:.1f} s; media p1 {states[0]['stats']}, p2 {states[1]['stats']}; sentry {len(sentry)} envelopes,"
          f" amplitude {sum(r['events'] for r in amp)} events in {len(amp)} batches, rtcstats {[r['messages'] for r in ws]} messages")  # fmt: skip

    after_ns, after_procs = _lab_state()
    assert after_ns == before_ns and after_procs == before_procs
