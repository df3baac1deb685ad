// The test page of tests/test_proxy_browser.py: a conferencing web client's telemetry, made by the real SDKs.
//
// Sentry (crash reports), Amplitude (product analytics) and rtcstats (WebRTC statistics over a
// websocket, as Jitsi Meet sends them) each send one event carrying an e-mail address, a device id
// and the meeting's title, to their vendors' real endpoints.  The test proxy sends all of it to a
// local sink.  When done the page POSTs a report to /done on its own origin.
import * as Sentry from '@sentry/browser';
import * as amplitude from '@amplitude/analytics-browser';
import rtcstats from 'rtcstats';
import traceWs from 'rtcstats/trace-ws';

const EMAIL = 'alice.example@example.org';
const DEVICE = '7c9e6679-7425-40de-944b-e07fc1f90ae7';
const MEETING = '85012345678';
const TITLE = 'Quarterly board review';

const report = { steps: [], errors: [] };
const step = (name) => report.steps.push(name);
const fail = (name, e) => report.errors.push(`${name}: ${e && e.stack ? e.stack : e}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function sentry() {
  Sentry.init({
    dsn: 'https://abc123def456@o4501.ingest.sentry.io/4502',
    release: 'confclient-web@5.17.1',
    defaultIntegrations: false,
    sendClientReports: false,
  });
  Sentry.setUser({ email: EMAIL, id: DEVICE });
  Sentry.setTag('meeting_id', MEETING);
  Sentry.captureMessage(`audio device lost in meeting '${TITLE}'`);
  if (!(await Sentry.flush(10000))) throw new Error('sentry flush timed out');
  step('sentry');
}

async function amp() {
  await amplitude.init('amplitude-api-key', EMAIL, {
    deviceId: DEVICE,
    autocapture: false,
    flushQueueSize: 1,
    flushIntervalMillis: 50,
    identityStorage: 'none',
    logLevel: amplitude.Types.LogLevel.Warn,
  }).promise;
  const r = await amplitude.track('meeting_joined', { meeting_id: MEETING, meeting_title: TITLE, email: EMAIL }).promise;
  if (r.code !== 200) throw new Error(`amplitude: ${r.code} ${r.message}`);
  step('amplitude');
}

async function rtc() {
  const trace = traceWs('wss://rtcstats-server-8x8.jitsi.net');
  rtcstats(trace, 1000, ['']);
  // jitsi-meet sends the identity of the participant first (rtcstats.sendIdentityData)
  trace('identity', null, { email: EMAIL, deviceId: DEVICE, meetingUniqueId: MEETING, meeting_title: TITLE, displayName: 'Alice Example' });
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.createDataChannel('chat');
  await pc.setLocalDescription(await pc.createOffer());
  await sleep(1500); // one getStats round
  pc.close();
  await sleep(200);
  trace.close(); // a websocket sends what it has queued before its closing handshake
  step('rtcstats');
}

async function main() {
  for (const [name, fn] of [['sentry', sentry], ['amplitude', amp], ['rtcstats', rtc]]) {
    try {
      await fn();
    } catch (e) {
      fail(name, e);
    }
  }
  await fetch('/done', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(report) });
  document.title = 'done';
}

main();
