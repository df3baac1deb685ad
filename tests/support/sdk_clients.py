"""Real telemetry SDKs sending one realistic event each, through the proxy named by HTTPS_PROXY.

Run as ``python -m tests.support.sdk_clients NAME`` with HTTPS_PROXY and the
proxy's CA in SSL_CERT_FILE / REQUESTS_CA_BUNDLE.  Every SDK aims at its
vendor's real host name; the test proxy redirects all of it to a local sink.
"""

from __future__ import annotations

import os
import sys

EMAIL = "alice.example@example.org"
DEVICE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
MEETING = "85012345678"
TITLE = "Quarterly board review"


def sentry() -> None:
    import sentry_sdk

    sentry_sdk.init(
        dsn="https://abc123def456@o4501.ingest.sentry.io/4502",
        https_proxy=os.environ["HTTPS_PROXY"],
        ca_certs=os.environ["SSL_CERT_FILE"],
        default_integrations=False,
        release="confclient@5.17.1",
    )
    sentry_sdk.set_user({"email": EMAIL, "id": DEVICE})
    sentry_sdk.set_tag("meeting_id", MEETING)
    sentry_sdk.capture_message(f"audio device lost in meeting {TITLE!r}")
    sentry_sdk.flush(timeout=10)


def segment() -> None:
    import segment.analytics as analytics

    analytics.write_key = "segment-write-key"
    analytics.host = "https://api.segment.io"
    analytics.sync_mode = True
    analytics.track(DEVICE, "Call Started", {"email": EMAIL, "meeting_id": MEETING, "meeting_title": TITLE, "mic_muted": True})
    analytics.flush()


def amplitude() -> None:
    from amplitude import Amplitude, BaseEvent

    client = Amplitude("amplitude-api-key")
    client.track(BaseEvent(event_type="meeting_joined", user_id=EMAIL, device_id=DEVICE, event_properties={"meeting_id": MEETING}))
    client.flush()
    client.shutdown()


def posthog() -> None:
    from posthog import Posthog

    ph = Posthog(project_api_key="phc_testkey", host="https://us.i.posthog.com", sync_mode=True, disable_geoip=True)
    ph.capture("screen_share_started", distinct_id=DEVICE, properties={"email": EMAIL, "meeting_id": MEETING})
    ph.flush()


if __name__ == "__main__":
    {"sentry": sentry, "segment": segment, "amplitude": amplitude, "posthog": posthog}[sys.argv[1]]()
