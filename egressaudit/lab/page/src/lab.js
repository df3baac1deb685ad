// The egressaudit lab's conference page: a minimal Janus WebSocket client (videoroom: publish and subscribe;
// textroom: chat over a data channel), screen share, file upload, and telemetry sent by real SDKs from npm
// (rtcstats over a WebSocket, @sentry/browser errors and sessions, @amplitude/analytics-browser events), all to
// hosts of the lab (egressaudit/lab/world.py).  Some telemetry carries the planted identifiers of the URL query
// (email, device, title) on purpose.  A driver calls window.lab.* over CDP (Runtime.evaluate, awaitPromise); each
// call resolves when the change has happened.
//
// Query: room, n (participant number), name, janus (wss URL), email, device, title.
import * as Sentry from '@sentry/browser';
import * as amplitude from '@amplitude/analytics-browser';
import rtcstats from 'rtcstats';
import traceWs from 'rtcstats/trace-ws';

const q = new URLSearchParams(location.search);
const ROOM = Number(q.get('room') || 1234);
const N = Number(q.get('n') || 1);
const NAME = q.get('name') || `Participant ${N}`;
const JANUS = q.get('janus') || 'wss://meet.lab.test:8989/';
const EMAIL = q.get('email') || '';
const DEVICE = q.get('device') || '';
const TITLE = q.get('title') || '';
const DOMAIN = location.hostname.replace(/^meet\./, '');
// The SDKs report to their vendors' real hosts, as an app embedding them does; the lab's DNS answers these names
// with the cloud (nothing leaves the lab's namespaces), so the auditor's shipped signatures name the vendors.
const SENTRY_HOST = q.get('sentry') || 'o4509.ingest.sentry.io';
const AMPLITUDE_HOST = q.get('amplitude') || 'api2.amplitude.com';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rid = () => Math.random().toString(36).slice(2, 12);
function log(...parts) {
  const line = `${new Date().toISOString()} ${parts.map(String).join(' ')}`;
  console.log(`[lab] ${line}`);
  const el = document.getElementById('log');
  if (el) el.textContent += `${line}\n`;
}

// -- telemetry: rtcstats first (it wraps RTCPeerConnection), then Sentry and Amplitude -------------------------------
const trace = traceWs(`wss://telemetry.${DOMAIN}/rtcstats`);
rtcstats(trace, 2000, ['']);
trace('identity', null, { email: EMAIL, deviceId: DEVICE, meeting_title: TITLE, displayName: NAME, room: ROOM });

Sentry.init({
  dsn: `https://labpublickey@${SENTRY_HOST}/1`,
  release: 'labmeet-web@1.0.0',
  defaultIntegrations: false,
  integrations: [Sentry.browserSessionIntegration()],
  sendClientReports: false,
});
Sentry.setUser({ email: EMAIL, id: DEVICE });
Sentry.setTag('meeting_title', TITLE);

const ampReady = amplitude.init('lab-amplitude-key', EMAIL || undefined, {
  deviceId: DEVICE || undefined,
  serverUrl: `https://${AMPLITUDE_HOST}/2/httpapi`,
  autocapture: false,
  flushQueueSize: 5,
  flushIntervalMillis: 1000,
  identityStorage: 'none',
  logLevel: amplitude.Types.LogLevel.Warn,
}).promise;
const track = (name, props = {}) => amplitude.track(name, { meeting_title: TITLE, room: ROOM, participant: N, ...props });

// -- Janus over a WebSocket ----------------------------------------------------------------------------------------
class Janus {
  constructor(url) {
    this.url = url;
    this.pending = new Map();
    this.handles = new Map();
  }
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, 'janus-protocol');
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`janus: cannot open ${this.url}`));
      ws.onclose = () => { this.closed = true; };
      ws.onmessage = (m) => this.dispatch(JSON.parse(m.data));
      this.ws = ws;
    });
  }
  send(msg, { ack = false } = {}) {
    const transaction = rid();
    const body = { ...msg, transaction };
    if (this.session && !('session_id' in body)) body.session_id = this.session;
    return new Promise((resolve, reject) => {
      this.pending.set(transaction, { resolve, reject, ack });
      this.ws.send(JSON.stringify(body));
    });
  }
  dispatch(m) {
    const p = m.transaction && this.pending.get(m.transaction);
    if (p && (m.janus !== 'ack' || p.ack)) {
      this.pending.delete(m.transaction);
      if (m.janus === 'error') p.reject(new Error(`janus: ${m.error && m.error.reason}`));
      else if (m.plugindata && m.plugindata.data && m.plugindata.data.error) p.reject(new Error(`janus plugin: ${m.plugindata.data.error}`));
      else p.resolve(m);
      return;
    }
    if (m.sender && this.handles.has(m.sender)) this.handles.get(m.sender).onEvent(m);
  }
  async create() {
    const r = await this.send({ janus: 'create' });
    this.session = r.data.id;
    this.keepalive = setInterval(() => this.send({ janus: 'keepalive' }, { ack: true }).catch(() => {}), 25000);
  }
  async attach(plugin, onEvent = () => {}) {
    const r = await this.send({ janus: 'attach', plugin });
    const handle = {
      id: r.data.id,
      onEvent,
      message: (body, jsep) => this.send({ janus: 'message', handle_id: r.data.id, body, ...(jsep ? { jsep } : {}) }),
      detach: () => this.send({ janus: 'detach', handle_id: r.data.id }).catch(() => {}),
    };
    this.handles.set(handle.id, handle);
    return handle;
  }
  async destroy() {
    clearInterval(this.keepalive);
    await this.send({ janus: 'destroy' }).catch(() => {});
    this.ws.close();
  }
}

function gathered(pc) {  // no trickle: the SDP carries every candidate (host only: iceServers is empty)
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 3000);
  });
}
function connected(pc, what) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (pc.connectionState === 'connected') resolve();
      else if (pc.connectionState === 'failed') reject(new Error(`${what}: ICE/DTLS failed`));
    };
    pc.addEventListener('connectionstatechange', check);
    check();
    setTimeout(() => reject(new Error(`${what}: not connected after 15 s`)), 15000);
  });
}
const waitFor = async (cond, what, ms = 10000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: timed out`);
    await sleep(50);
  }
};

// -- the call ---------------------------------------------------------------------------------------------------------
const S = {
  joined: false, left: false, publisherId: null, audio: false, camera: false, sharing: false, idle: false,
  feeds: {}, chatSent: 0, chatReceived: [], uploads: [], errors: [],
};
let janus = null;
let pub = null;
let pubPc = null;
let camStream = null;
let screenStream = null;
let audioSender = null;
let videoSender = null;
let textroom = null;
let dc = null;
const subs = new Map();  // feed id -> { handle, pc }
const dcWaiting = new Map();

async function subscribe(feed) {
  if (subs.has(feed.id) || feed.id === S.publisherId) return;
  const entry = { handle: null, pc: null, display: feed.display };
  subs.set(feed.id, entry);
  const handle = await janus.attach('janus.plugin.videoroom', (m) => {
    if (m.janus === 'hangup') log(`feed ${feed.id} hung up`);
  });
  entry.handle = handle;
  const r = await handle.message({ request: 'join', ptype: 'subscriber', room: ROOM, streams: [{ feed: feed.id }] });
  const pc = new RTCPeerConnection({ iceServers: [] });
  entry.pc = pc;
  pc.ontrack = (e) => {
    if (e.track.kind !== 'video') return;
    const v = document.createElement('video');
    Object.assign(v, { autoplay: true, playsInline: true, muted: true, srcObject: new MediaStream([e.track]) });
    document.getElementById('videos').appendChild(v);
  };
  await pc.setRemoteDescription(r.jsep);
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  await handle.message({ request: 'start' }, { type: 'answer', sdp: pc.localDescription.sdp });
  await connected(pc, `subscriber of ${feed.id}`);
  S.feeds[feed.id] = feed.display;
  log(`receiving feed ${feed.id} (${feed.display})`);
}

function onPublisherEvent(m) {
  const d = m.plugindata && m.plugindata.data;
  if (!d) return;
  for (const f of d.publishers || []) subscribe(f).catch((e) => S.errors.push(String(e)));
  const gone = d.unpublished || d.leaving;
  if (gone && subs.has(gone)) {
    const s = subs.get(gone);
    subs.delete(gone);
    delete S.feeds[gone];
    if (s.pc) s.pc.close();
    if (s.handle) s.handle.detach();
  }
}

async function publish() {
  pub = await janus.attach('janus.plugin.videoroom', onPublisherEvent);
  const joined = await pub.message({ request: 'join', ptype: 'publisher', room: ROOM, display: NAME });
  S.publisherId = joined.plugindata.data.id;
  camStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240, frameRate: 15 } });
  document.getElementById('local').srcObject = camStream;
  pubPc = new RTCPeerConnection({ iceServers: [] });
  audioSender = pubPc.addTransceiver(camStream.getAudioTracks()[0], { direction: 'sendonly', streams: [camStream] }).sender;
  videoSender = pubPc.addTransceiver(camStream.getVideoTracks()[0], { direction: 'sendonly', streams: [camStream] }).sender;
  await pubPc.setLocalDescription(await pubPc.createOffer());
  await gathered(pubPc);
  const r = await pub.message({ request: 'configure', audio: true, video: true }, { type: 'offer', sdp: pubPc.localDescription.sdp });
  await pubPc.setRemoteDescription(r.jsep);
  await connected(pubPc, 'publisher');
  S.audio = S.camera = true;
  onPublisherEvent(joined);
}

async function chatroom() {
  textroom = await janus.attach('janus.plugin.textroom');
  const r = await textroom.message({ request: 'setup' });
  const pc = new RTCPeerConnection({ iceServers: [] });
  const wire = (ch) => {
    ch.onmessage = (e) => {
      const m = JSON.parse(e.data);
      const w = m.transaction && dcWaiting.get(m.transaction);
      if (w) {
        dcWaiting.delete(m.transaction);
        if (m.textroom === 'error') w.reject(new Error(`textroom: ${m.error}`));
        else w.resolve(m);
      } else if (m.textroom === 'message') {
        S.chatReceived.push({ from: m.from, text: m.text });
      }
    };
  };
  pc.ondatachannel = (e) => wire(e.channel);
  await pc.setRemoteDescription(r.jsep);
  dc = pc.createDataChannel('JanusDataChannel', { ordered: true });
  wire(dc);
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  await textroom.message({ request: 'ack' }, { type: 'answer', sdp: pc.localDescription.sdp });
  textroom.pc = pc;
  await waitFor(() => dc.readyState === 'open', 'chat data channel', 15000);
  await dcSend({ textroom: 'join', room: ROOM, username: `p${N}-${rid()}`, display: NAME });
}

function dcSend(msg) {
  const transaction = rid();
  return new Promise((resolve, reject) => {
    dcWaiting.set(transaction, { resolve, reject });
    dc.send(JSON.stringify({ ...msg, transaction }));
    setTimeout(() => reject(new Error('textroom: no answer')), 10000);
  });
}

async function stats() {
  const out = { audioBytesSent: 0, videoBytesSent: 0, packetsSent: 0, bytesReceived: 0, packetsReceived: 0, framesDecoded: 0, framesEncoded: 0 };
  const pcs = [pubPc, ...[...subs.values()].map((s) => s.pc)].filter(Boolean);
  for (const pc of pcs) {
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp') {
        out[s.kind === 'audio' ? 'audioBytesSent' : 'videoBytesSent'] += s.bytesSent || 0;
        out.packetsSent += s.packetsSent || 0;
        out.framesEncoded += s.framesEncoded || 0;
      } else if (s.type === 'inbound-rtp') {
        out.bytesReceived += s.bytesReceived || 0;
        out.packetsReceived += s.packetsReceived || 0;
        out.framesDecoded += s.framesDecoded || 0;
      }
    });
  }
  return out;
}

// The SSRCs this participant sends with, by kind (ground truth for the capture's RTP streams: a sender keeps its SSRC
// across replaceTrack, so mute and camera off show as gaps in these streams).
async function ssrcs() {
  const out = { audio: [], video: [] };
  if (!pubPc) return out;
  (await pubPc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && out[s.kind] && !out[s.kind].includes(s.ssrc)) out[s.kind].push(s.ssrc);
  });
  return out;
}

// -- the hooks ---------------------------------------------------------------------------------------------------------
const step = (name, fn) => async (...args) => {
  try {
    const r = await fn(...args);
    track(`lab_${name}`);
    log(`${name} ok`);
    return r === undefined ? true : r;
  } catch (e) {
    S.errors.push(`${name}: ${e && e.message ? e.message : e}`);
    Sentry.captureException(e);
    throw e;
  }
};

window.lab = {
  ready: ampReady.then(() => true),
  join: step('join', async () => {
    janus = new Janus(JANUS);
    await janus.open();
    await janus.create();
    await publish();
    await chatroom();
    S.joined = true;
    Sentry.captureMessage(`joined meeting '${TITLE}' as ${EMAIL}`);
    return { ssrcs: await ssrcs() };
  }),
  // Muting stops the audio sender (no RTP at all, as Zoom's and Teams' clients do), rather than sending silence
  // (track.enabled = false), so "what is sent while muted" has a sharp truth to check against.
  mute: step('mute', async () => {
    await audioSender.replaceTrack(null);
    S.audio = false;
  }),
  unmute: step('unmute', async () => {
    await audioSender.replaceTrack(camStream.getAudioTracks()[0]);
    S.audio = true;
  }),
  cameraOff: step('camera_off', async () => {
    await videoSender.replaceTrack(null);
    S.camera = false;
  }),
  cameraOn: step('camera_on', async () => {
    if (!S.sharing) await videoSender.replaceTrack(camStream.getVideoTracks()[0]);
    S.camera = true;
  }),
  shareStart: step('share_start', async () => {
    screenStream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 5 }, audio: false });
    await videoSender.replaceTrack(screenStream.getVideoTracks()[0]);
    S.sharing = true;
  }),
  shareStop: step('share_stop', async () => {
    await videoSender.replaceTrack(S.camera ? camStream.getVideoTracks()[0] : null);
    if (screenStream) screenStream.getTracks().forEach((t) => t.stop());
    screenStream = null;
    S.sharing = false;
  }),
  chat: step('chat', async (text) => {
    await dcSend({ textroom: 'message', room: ROOM, text: String(text) });
    S.chatSent += 1;
  }),
  upload: step('upload', async (sizeBytes = 100000) => {
    const bytes = new Uint8Array(sizeBytes);
    for (let i = 0; i < sizeBytes; i++) bytes[i] = (i * 31 + N) & 0xff;
    const form = new FormData();
    form.append('meeting', TITLE);
    form.append('file', new Blob([bytes], { type: 'application/octet-stream' }), `notes-${N}.bin`);
    const r = await fetch(`https://upload.${DOMAIN}/upload`, { method: 'POST', body: form });
    if (!r.ok) throw new Error(`upload: HTTP ${r.status}`);
    const body = await r.json();
    S.uploads.push(body.bytes);
    return body;
  }),
  idle: step('idle', async () => { S.idle = true; }),
  leave: step('leave', async () => {
    if (pub) await pub.message({ request: 'leave' }).catch(() => {});
    for (const s of subs.values()) if (s.pc) s.pc.close();
    subs.clear();
    if (pubPc) pubPc.close();
    if (textroom && textroom.pc) textroom.pc.close();
    if (janus) await janus.destroy();
    camStream && camStream.getTracks().forEach((t) => t.stop());
    S.joined = false;
    S.left = true;
    await Sentry.flush(5000);
    await amplitude.flush().promise;
  }),
  state: async () => {
    const a = camStream && camStream.getAudioTracks()[0];
    return {
      ...S,
      n: N, room: ROOM,
      audio: !!(a && a.enabled && audioSender && audioSender.track === a),
      ssrcs: await ssrcs(),
      videoSending: !!(videoSender && videoSender.track),
      subscribed: Object.keys(S.feeds).length,
      stats: await stats(),
    };
  },
  flush: async () => { await Sentry.flush(5000); await amplitude.flush().promise; return true; },
};
log(`lab page: room ${ROOM}, participant ${N}`);
