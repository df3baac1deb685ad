"""The packaged vendor signature files: presence, citations, and representative matches."""

from __future__ import annotations

from pathlib import Path

import pytest

from egressaudit.signatures import SignatureError, data_dir, default_db, expand, load, load_file

REQUIRED_VENDORS = {
    "zoom",
    "microsoft",
    "google",
    "cisco",
    "jitsi",
    "bigbluebutton",
    "slack",
    "discord",
    "goto",
    "sentry",
    "amplitude",
    "segment",
    "mixpanel",
    "datadog",
    "newrelic",
    "bugsnag",
    "appcenter",
    "callstats",
    "rtcstats",
    "pushwoosh",
}


def test_every_required_vendor_is_present() -> None:
    db = default_db()
    missing = REQUIRED_VENDORS - set(db.vendors)
    assert not missing, f"vendor files missing: {sorted(missing)}"


def test_file_names_match_vendor_ids() -> None:
    for p in sorted(data_dir().glob("*.yaml")):
        assert load_file(p).vendor == p.stem


def test_every_rule_cites_a_source() -> None:
    db = default_db()
    for v in db.vendors.values():
        assert v.rules, f"{v.vendor}: no rules"
        for r in v.rules:
            citation = v.sources.get(r.source, r.source)
            assert citation.strip(), f"{v.vendor}/{r.id}: empty source"
            # a bare key that is not in `sources` would be printed as if it were a citation
            assert r.source in v.sources or len(r.source) > 20, f"{v.vendor}/{r.id}: source {r.source!r} is neither a key of sources nor a citation"


def test_affiliates_name_known_vendors() -> None:
    db = default_db()
    for v in db.vendors.values():
        for a in v.affiliates:
            assert a in db.vendors, f"{v.vendor}: unknown affiliate {a!r}"


# (hostname, ip, port, transport) -> (vendor, category)
CASES = [
    # Zoom
    (("log.zoom.us", "52.202.62.238", 443, "tcp"), ("zoom", "telemetry")),
    (("log.zoom.us", None, 443, "tcp"), ("zoom", "telemetry")),
    ((None, "134.224.90.111", 8801, "udp"), ("zoom", "media")),
    ((None, "144.195.73.154", 8805, "udp"), ("zoom", "media")),
    (("zoomfrn99mmr.zoom.us", "109.94.160.99", 8801, "udp"), ("zoom", "media")),
    (("zoomam105zc.zoom.us", "213.19.144.105", 443, "tcp"), ("zoom", "signaling")),
    ((None, "213.19.144.105", 443, "tcp"), ("zoom", "signaling")),
    # Microsoft: Teams, Skype, M365 telemetry and sign-in
    (("mobile.pipe.aria.microsoft.com", "52.114.77.33", 443, "tcp"), ("microsoft", "telemetry")),
    (("browser.pipe.aria.microsoft.com", None, 443, "tcp"), ("microsoft", "telemetry")),
    (("v10.events.data.microsoft.com", None, 443, "tcp"), ("microsoft", "telemetry")),
    (("teams.events.data.microsoft.com", None, 443, "tcp"), ("microsoft", "telemetry")),
    (("vortex.data.microsoft.com", None, 443, "tcp"), ("microsoft", "telemetry")),
    (("watson.telemetry.microsoft.com", None, 443, "tcp"), ("microsoft", "telemetry")),
    ((None, "52.114.250.137", 3478, "udp"), ("microsoft", "media")),
    ((None, "52.115.136.55", 3479, "udp"), ("microsoft", "media")),
    ((None, "52.114.250.152", 443, "tcp"), ("microsoft", "signaling")),
    (("trouter2-asse-a.trouter.teams.microsoft.com", "52.114.15.45", 443, "tcp"), ("microsoft", "signaling")),
    (("login.microsoftonline.com", "40.126.9.5", 443, "tcp"), ("microsoft", "auth")),
    (("config.teams.microsoft.com", None, 443, "tcp"), ("microsoft", "config_update")),
    (("eu-api.asm.skype.com", None, 443, "tcp"), ("microsoft", "content_upload")),
    # Google
    (("meet.google.com", "173.194.73.101", 443, "tcp"), ("google", "signaling")),
    (("chat.google.com", None, 443, "tcp"), ("google", "signaling")),
    ((None, "142.250.82.76", 19305, "udp"), ("google", "media")),
    ((None, "74.125.250.10", 3478, "udp"), ("google", "media")),
    ((None, "74.125.128.127", 19302, "udp"), ("google", "media")),
    (("turn.l.google.com", "142.250.82.249", 3478, "tcp"), ("google", "media")),
    (("ssl.google-analytics.com", "216.58.208.40", 443, "tcp"), ("google", "telemetry")),
    (("firebase-settings.crashlytics.com", None, 443, "tcp"), ("google", "telemetry")),
    # Webex, Discord, Jitsi, Slack, GoTo
    (("radcom.webex.com", "64.68.105.103", 443, "tcp"), ("cisco", "signaling")),
    (("cisco.webex.com", None, 443, "tcp"), ("cisco", "signaling")),
    ((None, "62.109.229.158", 9000, "udp"), ("cisco", "media")),
    (("discord.gg", None, 443, "tcp"), ("discord", "signaling")),
    (("frankfurt1234.discord.media", None, 50004, "udp"), ("discord", "media")),
    ((None, "66.22.196.173", 50004, "udp"), ("discord", "media")),
    (("meet.jit.si", None, 443, "tcp"), ("jitsi", "signaling")),
    (("meet.jit.si", None, 10000, "udp"), ("jitsi", "media")),
    (("rtcstats-server-8x8.jitsi.net", None, 443, "tcp"), ("jitsi", "telemetry")),
    (("slackb.com", None, 443, "tcp"), ("slack", "telemetry")),
    (("global1.gotomeeting.com", None, 443, "tcp"), ("goto", "signaling")),
    # third parties
    (("o123.ingest.sentry.io", None, 443, "tcp"), ("sentry", "telemetry")),
    (("api2.amplitude.com", None, 443, "tcp"), ("amplitude", "telemetry")),
    (("api.segment.io", None, 443, "tcp"), ("segment", "telemetry")),
    (("api-js.mixpanel.com", None, 443, "tcp"), ("mixpanel", "telemetry")),
    (("browser-intake-datadoghq.com", None, 443, "tcp"), ("datadog", "telemetry")),
    (("bam.nr-data.net", None, 443, "tcp"), ("newrelic", "telemetry")),
    (("sessions.bugsnag.com", None, 443, "tcp"), ("bugsnag", "telemetry")),
    (("notify.bugsnag.com", None, 443, "tcp"), ("bugsnag", "telemetry")),
    (("in.appcenter.ms", None, 443, "tcp"), ("appcenter", "telemetry")),
    (("gate.hockeyapp.net", "40.79.138.41", 443, "tcp"), ("appcenter", "telemetry")),
    (("stats.callstats.io", None, 443, "tcp"), ("callstats", "telemetry")),
    (("rtcstats.example.org", None, 443, "tcp"), ("rtcstats", "telemetry")),
    (("cp.pushwoosh.com", "78.46.237.91", 80, "tcp"), ("pushwoosh", "telemetry")),
    (("api.crittercism.com", None, 443, "tcp"), ("crittercism", "telemetry")),
]


@pytest.mark.parametrize(("remote", "expected"), CASES, ids=[f"{h or ip}:{t}/{p}" for (h, ip, p, t), _ in CASES])
def test_representative_matches(remote: tuple[str | None, str | None, int, str], expected: tuple[str, str]) -> None:
    m = default_db().match(*remote)
    assert m is not None, f"no rule matches {remote}"
    assert (m.vendor, m.category.value if m.category else None) == expected, f"{remote}: {m.rule_id} ({m.reason})"
    assert m.source


def test_host_name_rules_beat_address_rules() -> None:
    # mobile.pipe.aria.microsoft.com resolves into the Teams ranges: the host name decides
    m = default_db().match("mobile.pipe.aria.microsoft.com", "52.114.77.33", 443, "tcp")
    assert m is not None and m.rule_id == "microsoft/telemetry-aria"
    assert m.service == "m365_telemetry"


def test_unknown_remote_is_not_matched() -> None:
    db = default_db()
    assert db.match("example.invalid", "192.0.2.1", 443, "tcp") is None
    assert db.match(None, "192.0.2.1", 5060, "udp") is None


def test_http_path_rules() -> None:
    db = default_db()
    m = db.match_http("cp.pushwoosh.com", None, 80, "POST", "/json/1.3/registerDevice")
    assert m is not None and (m.vendor, m.category) == ("pushwoosh", "signaling")
    m = db.match_http("cp.pushwoosh.com", None, 80, "POST", "/json/1.3/applicationOpen")
    assert m is not None and (m.vendor, m.category) == ("pushwoosh", "telemetry")
    m = db.match_http("play.google.com", None, 443, "POST", "/log?format=json")
    assert m is not None and (m.vendor, m.category, m.service) == ("google", "telemetry", "clearcut")
    # a generic path rule says what, the host says who
    m = db.match_http("meet.jit.si", None, 443, "GET", "/rtcstats")
    assert m is not None and (m.vendor, m.category) == ("jitsi", "telemetry")


def test_microsoft_counts_app_center_as_first_party() -> None:
    assert "appcenter" in default_db().vendors["microsoft"].affiliates


BROKEN = """\
vendor: broken
display_name: Broken Vendor
kind: analytics
sources:
  doc: "a citation"
rules:
  - id: good-rule
    domains: [ok.example.com]
    category: telemetry
    source: doc
  - id: bad-cidr-rule
    cidrs: [10.0.0.300/8]
    category: telemetry
    source: doc
"""


def test_broken_file_names_file_and_rule(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(SignatureError) as ei:
        load([p])
    msg = str(ei.value)
    assert str(p) in msg
    assert "bad-cidr-rule" in msg


def test_broken_category_names_file_and_rule(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text(
        BROKEN.replace("10.0.0.300/8", "10.0.0.0/8").replace("category: telemetry\n    source: doc\n", "category: tracking\n    source: doc\n", 2),
        encoding="utf-8",
    )
    with pytest.raises(SignatureError) as ei:
        load_file(p)
    assert str(p) in str(ei.value) and "good-rule" in str(ei.value)


def test_extra_file_cannot_redefine_a_packaged_vendor(tmp_path: Path) -> None:
    p = tmp_path / "zoom.yaml"
    p.write_text(
        "vendor: zoom\ndisplay_name: Z\nkind: conferencing\nrules:\n  - id: x\n    domains: [x.example]\n    source: test\n", encoding="utf-8"
    )
    with pytest.raises(SignatureError, match="zoom"):
        load(extra=expand([tmp_path]))
