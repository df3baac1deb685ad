// egressaudit sample page: runs the Janus EchoTest by itself (no clicks) and
// posts getStats() telemetry over HTTPS, the way rtcstats/callstats do.
//
// Query parameters: duration (seconds of media after the PeerConnection is up,
// default 20), bitrate (video cap in bit/s that the echo test plugin asks the
// browser to respect via REMB, default 128000).
"use strict";

const params = new URLSearchParams(location.search);
const DURATION_MS = 1000 * Number(params.get("duration") || 20);
const BITRATE = Number(params.get("bitrate") || 128000);
const JANUS_URL = "http://meet.selfhosted.test:8088/janus";
const STATS_URL = "https://stats.selfhosted.test/v1/stats";
const STATS_EVERY_MS = 2000;
const GIVE_UP_MS = DURATION_MS + 40000;

let janus = null;
let echo = null;
let seq = 0;
let statsTimer = null;
let finished = false;
const callId = "echo-" + Math.random().toString(36).slice(2, 12);

function log(...parts) {
  const line = new Date().toISOString() + " " + parts.map(String).join(" ");
  console.log("[sample] " + line);
  document.getElementById("log").textContent += line + "\n";
}

async function snapshot() {
  const pc = echo && echo.webrtcStuff && echo.webrtcStuff.pc;
  if (!pc) return [];
  const report = await pc.getStats();
  const out = [];
  report.forEach((s) => out.push(s));
  return out;
}

function summarise(stats) {
  const sum = { bytesSent: 0, bytesReceived: 0, packetsSent: 0, packetsReceived: 0, framesEncoded: 0, framesDecoded: 0 };
  for (const s of stats) {
    if (s.type === "outbound-rtp") {
      sum.bytesSent += s.bytesSent || 0;
      sum.packetsSent += s.packetsSent || 0;
      sum.framesEncoded += s.framesEncoded || 0;
    } else if (s.type === "inbound-rtp") {
      sum.bytesReceived += s.bytesReceived || 0;
      sum.packetsReceived += s.packetsReceived || 0;
      sum.framesDecoded += s.framesDecoded || 0;
    }
  }
  return sum;
}

async function post(doc) {
  const body = Object.assign(
    { schema: "egressaudit-sample/getstats-1", callId: callId, seq: seq++, ts: Date.now(),
      userAgent: navigator.userAgent },
    doc);
  const r = await fetch(STATS_URL, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error("stats sink answered " + r.status);
}

async function tick() {
  try {
    const stats = await snapshot();
    await post({ final: false, summary: summarise(stats), stats: stats });
  } catch (e) {
    log("stats post failed:", e);
  }
}

async function finish(ok, why, stats) {
  if (finished) return;
  finished = true;
  if (statsTimer) clearInterval(statsTimer);
  log("finishing:", ok ? "ok" : "FAILED", why || "");
  try {
    await post({ final: true, ok: ok, reason: why || "", summary: summarise(stats || []), stats: stats || [] });
  } catch (e) {
    log("final stats post failed:", e);
  }
  log("done");
}

function hangUp() {
  // Take the last snapshot while the PeerConnection still exists, then hang up
  // the echo test and destroy the Janus session (both are signalling requests
  // in the capture), then send the final telemetry document.
  snapshot().then((stats) => {
    const sum = summarise(stats);
    log("last snapshot:", JSON.stringify(sum));
    const ok = sum.bytesSent > 0 && sum.bytesReceived > 0 && sum.framesDecoded > 0;
    echo.hangup();
    janus.destroy({
      success: () => finish(ok, ok ? "call completed" : "no media both ways", stats),
      error: (e) => finish(false, "destroy failed: " + e, stats),
    });
  });
}

function start() {
  janus = new Janus({
    server: JANUS_URL,
    iceServers: [],  // no STUN/TURN: nothing but the Janus host candidate is reachable
    success: () => janus.attach({
      plugin: "janus.plugin.echotest",
      opaqueId: "egressaudit-sample-" + callId,
      success: (handle) => {
        echo = handle;
        log("attached to", echo.getPlugin(), "handle", echo.getId());
        echo.createOffer({
          tracks: [
            { type: "audio", capture: true, recv: true },
            { type: "video", recv: true,
              capture: { width: { ideal: 320 }, height: { ideal: 240 }, frameRate: { ideal: 15 } } },
          ],
          success: (jsep) => echo.send({ message: { audio: true, video: true, bitrate: BITRATE }, jsep: jsep }),
          error: (e) => finish(false, "createOffer: " + (e && e.message ? e.message : e)),
        });
      },
      error: (e) => finish(false, "attach: " + e),
      iceState: (state) => log("ICE state", state),
      mediaState: (medium, on, mid) => log("Janus", on ? "started" : "stopped", "receiving our", medium, "mid", mid),
      webrtcState: (on) => {
        log("PeerConnection", on ? "up" : "down");
        if (on && !statsTimer) {
          statsTimer = setInterval(tick, STATS_EVERY_MS);
          tick();
          setTimeout(hangUp, DURATION_MS);
        }
      },
      onmessage: (msg, jsep) => {
        if (jsep) echo.handleRemoteJsep({ jsep: jsep });
        if (msg && msg.result === "done") log("echo test closed by Janus");
      },
      onlocaltrack: (track, on) => {
        if (on && track.kind === "video") {
          document.getElementById("local").srcObject = new MediaStream([track]);
        }
      },
      onremotetrack: (track, mid, on) => {
        log("remote", track.kind, "track", on ? "added" : "removed", "mid", mid);
        if (on) {
          const v = document.getElementById("remote");
          const ms = v.srcObject || new MediaStream();
          ms.addTrack(track);
          v.srcObject = ms;
        }
      },
    }),
    error: (e) => finish(false, "janus: " + e),
  });
}

window.addEventListener("load", () => {
  log("page loaded; duration", DURATION_MS / 1000, "s, video cap", BITRATE, "bit/s");
  setTimeout(() => finish(false, "gave up after " + GIVE_UP_MS / 1000 + " s"), GIVE_UP_MS);
  Janus.init({
    debug: ["warn", "error"],
    callback: () => {
      if (!Janus.isWebrtcSupported()) return finish(false, "no WebRTC support");
      start();
    },
  });
});
