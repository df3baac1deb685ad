"""Janus's configuration folder for the lab, written by the world (Debian's ``janus`` 1.1.x, its ``.jcfg`` syntax).

Only what the lab uses is loaded: the videoroom and textroom plugins and the WebSockets transport, which listens
for secure WebSockets (wss, the lab's certificate) only.  ICE is lite and limited to the cloud's interface, so the
only candidate Janus offers is the cloud address; media uses ``rtp_port_range``.  Nothing is written outside the
folder given.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

JANUS = "janus"
WSS_PORT = 8989
RTP_PORTS = (20000, 20199)
ROOM = 1234
KEEP = {"plugins": {"libjanus_videoroom.so", "libjanus_textroom.so"}, "transports": {"libjanus_websockets.so"}, "loggers": set(), "events": set()}


def library_dir() -> Path | None:
    """Where Debian's janus keeps its plugin folders (``.../janus`` holding ``plugins/``), or None."""
    try:
        out = subprocess.run(["dpkg", "-L", "janus"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        if line.endswith("/plugins/libjanus_videoroom.so"):
            return Path(line).parent.parent
    for cand in (Path("/usr/lib/x86_64-linux-gnu/janus"), Path("/usr/lib/aarch64-linux-gnu/janus"), Path("/usr/lib/janus")):
        if (cand / "plugins" / "libjanus_videoroom.so").exists():
            return cand
    return None


def _disable(folder: Path, keep: set[str]) -> str:
    return ",".join(sorted(p.name for p in folder.glob("libjanus_*.so") if p.name not in keep))


def write_config(folder: Path, *, lib: Path, interface: str, cert: Path, key: Path, room: int = ROOM) -> Path:
    """Write ``janus.jcfg`` and the plugins' and transport's files into ``folder``; the main file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    lo, hi = RTP_PORTS
    disabled = {kind: _disable(lib / kind, keep) for kind, keep in KEEP.items()}
    (folder / "janus.jcfg").write_text(
        f"""general: {{
	configs_folder = "{folder}"
	plugins_folder = "{lib}/plugins"
	transports_folder = "{lib}/transports"
	events_folder = "{lib}/events"
	loggers_folder = "{lib}/loggers"
	debug_level = 4
	debug_timestamps = true
	debug_colors = false
	server_name = "egressaudit-lab"
	session_timeout = 60
	hide_dependencies = true
}}
certificates: {{
}}
media: {{
	ipv6 = false
	rtp_port_range = "{lo}-{hi}"
}}
nat: {{
	ice_lite = true
	ice_enforce_list = "{interface}"
	ignore_mdns = true
	nice_debug = false
}}
plugins: {{
	disable = "{disabled["plugins"]}"
}}
transports: {{
	disable = "{disabled["transports"]}"
}}
loggers: {{
	disable = "{disabled["loggers"]}"
}}
events: {{
	broadcast = false
}}
""",
        encoding="utf-8",
    )
    (folder / "janus.transport.websockets.jcfg").write_text(
        f"""general: {{
	json = "compact"
	ws = false
	wss = true
	wss_port = {WSS_PORT}
	ws_logging = "err,warn"
}}
admin: {{
	admin_ws = false
	admin_wss = false
}}
certificates: {{
	cert_pem = "{cert}"
	cert_key = "{key}"
}}
""",
        encoding="utf-8",
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text(
        f"""general: {{
}}
room-{room}: {{
	description = "egressaudit lab room"
	publishers = 8
	bitrate = 300000
	fir_freq = 10
	audiocodec = "opus"
	videocodec = "vp8"
}}
""",
        encoding="utf-8",
    )
    (folder / "janus.plugin.textroom.jcfg").write_text(
        f"""general: {{
	json = "compact"
}}
room-{room}: {{
	description = "egressaudit lab chat"
}}
""",
        encoding="utf-8",
    )
    return folder / "janus.jcfg"
