"""The words egressaudit classifies traffic with.

``DataClass`` follows the vocabulary of Zoom's 2023 terms of service (sections
10.2 and 10.4): *customer content* is what users put into the service (audio,
video, screen share, chat, files, whiteboards, polls, reactions); *service
generated data* is what the service produces about its use (telemetry,
product-usage and diagnostic data).  Everything needed to run the service
(signalling, authentication, configuration, DNS, web assets) is
*service operation*.
"""

from __future__ import annotations

from enum import StrEnum


class Party(StrEnum):
    """Who operates the remote end, relative to the client being audited."""

    first = "first"
    third = "third"
    unknown = "unknown"


class Category(StrEnum):
    """What a flow or exchange is for."""

    media = "media"
    content_upload = "content_upload"
    telemetry = "telemetry"
    signaling = "signaling"
    auth = "auth"
    config_update = "config_update"
    web_asset = "web_asset"
    dns = "dns"
    other = "other"
    unknown = "unknown"


class DataClass(StrEnum):
    """Zoom-terms data class of what a flow carries."""

    customer_content = "customer_content"
    service_generated = "service_generated"
    service_operation = "service_operation"
    unknown = "unknown"


#: The data class each category implies.  Kept in one place so that the packet
#: path, the HTTP path and the reports agree.
DATA_CLASS_OF: dict[Category, DataClass] = {
    Category.media: DataClass.customer_content,
    Category.content_upload: DataClass.customer_content,
    Category.telemetry: DataClass.service_generated,
    Category.signaling: DataClass.service_operation,
    Category.auth: DataClass.service_operation,
    Category.config_update: DataClass.service_operation,
    Category.web_asset: DataClass.service_operation,
    Category.dns: DataClass.service_operation,
    Category.other: DataClass.unknown,
    Category.unknown: DataClass.unknown,
}


def data_class_of(category: Category | str) -> DataClass:
    """The data class a category implies."""
    return DATA_CLASS_OF[Category(category)]


class CallState(StrEnum):
    """What was happening in the call from a marker on (``markers.state``); a user's own word is allowed too."""

    joining = "joining"
    lobby = "lobby"
    talking = "talking"
    muted = "muted"
    unmuted = "unmuted"
    camera_on = "camera-on"
    camera_off = "camera-off"
    screen_share_start = "screen-share-start"
    screen_share_stop = "screen-share-stop"
    chat = "chat"
    upload = "upload"
    idle = "idle"
    left = "left"


class Attribution(StrEnum):
    """How a row was tied to the process that made it (``flows.attributed_by``, ``http.attributed_by``)."""

    netns = "netns"
    """The client ran in a network namespace of its own (``session start --netns``): every packet there is its."""
    socket_table = "socket-table"
    """The socket was seen owned by the process in the kernel's socket table while it was open."""
    none = "none"
    """Not known (no process owned it when the table was sampled, or no attribution was asked for)."""
