"""The lab's scripted calls: scripts load (shipped and from files, bad ones in one line), and a script played on a
real headless Chromium driven over DevTools pipes writes the audited participant's markers when its page says the
change happened."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import egressaudit as ea
from egressaudit.errors import UsageError
from egressaudit.lab import script as lab_script
from egressaudit.lab.cdp import Browser
from tests.support.netns import Netns, netns_unavailable

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/lib/chromium/chromium" if Path("/usr/lib/chromium/chromium").exists() else shutil.which("chromium")
SAMPLE = ROOT / "captures" / "janus-echo" / "call.pcapng"

# A page whose hooks take a while and say what they did (the lab's conference page has the same hooks).
PAGE = (
    "data:text/html,<title>lab</title><script>"
    "const done=[];const later=(w,ms)=>new Promise(r=>setTimeout(()=>{done.push(w);r(w)},ms));"
    "window.lab={done,join:()=>later('join',300),mute:()=>later('mute',200),unmute:()=>later('unmute',50),"
    "chat:(t)=>later('chat:'+t,10),upload:(n)=>later('upload:'+n,10),leave:()=>later('leave',10),"
    "cameraOff:()=>{throw new Error('no camera here')}}"
    "</script>"
)


def test_shipped_scripts_load_and_bad_ones_say_why(tmp_path: Path) -> None:
    for name in lab_script.SHIPPED:
        s = lab_script.load(name)
        assert s.name == name and s.steps[0].do == "join" and s.length <= 90
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - {at: 1, do: dance}\n")
    with pytest.raises(UsageError, match=r"bad.yaml: steps.0.do: Input should be 'join'"):
        lab_script.load(bad)
    bad.write_text("name: x\nsteps:\n  - {at: -1, do: mute}\n")
    with pytest.raises(UsageError, match=r"steps.0.at"):
        lab_script.load(bad)
    bad.write_text("name: x\nsteps: [\n")
    with pytest.raises(UsageError, match="not YAML"):
        lab_script.load(bad)
    with pytest.raises(UsageError, match="cannot read it"):
        lab_script.load(tmp_path / "missing.yaml")
    s = lab_script.Script.model_validate({"name": "w", "steps": [{"at": 0, "who": [2, 9], "do": "mute"}, {"at": 1, "who": "others", "do": "leave"}]})
    assert s.steps[0].targets(3) == [2] and s.steps[1].targets(3) == [2, 3] and s.length == 6.0


@pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable()))
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.timeout(120)
def test_a_script_played_on_real_browsers_marks_the_audited_participant(tmp_path: Path) -> None:
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} missing")
    out = tmp_path / "session"
    ea.analyze_files([SAMPLE], out)  # a session to mark
    script = lab_script.Script.model_validate(
        {
            "name": "t",
            "duration": 3,
            "steps": [
                {"at": 0, "who": "all", "do": "join"},
                {"at": 1, "who": "audited", "do": "mute"},
                {"at": 1.5, "who": 2, "do": "chat", "text": "hi 'there'"},
                {"at": 1.5, "who": "audited", "do": "camera-off"},
                {"at": 2, "who": "all", "do": "leave"},
            ],
        }
    )
    ns = Netns.create()  # (no route out of it: the pages are data: URLs)
    browsers: dict[int, Browser] = {}
    try:
        for n in (1, 2):
            args = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / f'p{n}'}", PAGE]  # fmt: skip
            browsers[n] = Browser(args, prefix=ns.exec)
        for b in browsers.values():
            b.wait_for("typeof lab === 'object'")
        said: list[str] = []
        t0 = time.time()
        log = lab_script.play(script, browsers, mark=lambda st, ts, note: ea.add_marker(out, st, ts=ts, note=note, source="lab"), say=said.append)
        elapsed = time.time() - t0
        done = {n: b.evaluate("lab.done") for n, b in browsers.items()}
    finally:
        for b in browsers.values():
            b.close()
        ns.close()
    assert 3.0 <= elapsed < 6
    assert done[1] == ["join", "mute", "leave"] and done[2] == ["join", 'chat:hi \'there\'', "leave"]
    assert len(said) == 1 and "camera-off at 1.5 s failed" in said[0] and "no camera here" in said[0]
    mk = ea.open_session(out).markers
    assert list(mk["state"]) == ["joining", "talking", "muted", "left"] and set(mk["source"]) == {"lab"}
    # each marker at the time the page finished: join takes 0.3 s, mute 0.2 s after its step at 1 s
    t = {r["state"]: r["ts"].timestamp() for r in mk.to_dict("records")}
    assert 0.25 <= t["talking"] - t["joining"] < 1.5 and 1.15 <= t["muted"] - t0 < 2
    entry = next(e for e in log if e["participant"] == 1 and e["do"] == "mute")
    assert entry["result"] == "mute" and entry["done"] - entry["asked"] >= 0.19

