"""The fields a parsed body carries, and what their values look like.

:func:`inventory` walks a JSON-like tree (from :func:`egressaudit.http.bodies.parse_body`)
and returns one row per distinct key path, list indexes folded
(``events[].device.model``; protobuf fields ``#3.#1``), with the
``fields.parquet`` columns that describe the field: its type, how often it
occurs, what detectors fire on its key name and values, and the first value as
a salted hash (in clear only when asked).

Detectors: identifiers and personal data (email, phone, ipv4, ipv6, mac,
uuid, device_id, serial, meeting_id, seen_name) and customer content leaking
into telemetry (meeting_title, chat_text, file_name, transcript).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import secrets
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from egressaudit.http.bodies import Fixed32, Fixed64, Varint

MAX_DEPTH = 64
"""Nesting depth beyond which a subtree becomes one leaf (its first :data:`MAX_TEXT` characters as JSON)."""
MAX_PATHS = 5000
"""Distinct key paths kept per body; further ones are folded into ``<more>``."""
MAX_CONTAINERS = 500_000
"""Objects and lists walked per tree; the walk stops there (16 MiB of ``[{},{},...]`` is 5.6M of them: 8 s)."""
MAX_SCANNED = 1000
"""Values per key path that detectors look at (all are counted)."""
MAX_TEXT = 10_000
"""Longer strings are searched for embedded e-mail addresses only in their first this many characters."""

FIELD_KEYS = ("key_path", "value_type", "count", "detectors", "value_hash", "value", "value_length")
"""The keys of each row :func:`inventory` returns (a subset of ``egressaudit.schema.FIELDS``)."""


# -- salt and hashing ------------------------------------------------------------------


def salt_new() -> bytes:
    """A fresh random 32-byte salt (one per session)."""
    return secrets.token_bytes(32)


def canonical_text(value: object) -> str:
    """The text a value is hashed and stored as: strings as is, JSON spelling for scalars, hex for bytes."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else str(value)  # json's spelling of a finite float
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def hash_value(salt: bytes, value: object) -> str:
    """Hex SHA-256 of ``salt`` + the value's canonical text (UTF-8): equal values join across exchanges."""
    return _hash_text(salt, canonical_text(value))


def _hash_text(salt: bytes, text: str) -> str:
    return hashlib.sha256(salt + text.encode("utf-8", "surrogatepass")).hexdigest()


def value_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Varint):
        return "varint"
    if isinstance(value, Fixed32):
        return "fixed32"
    if isinstance(value, Fixed64):
        return "fixed64"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


# -- detectors ---------------------------------------------------------------------

DETECTORS = frozenset(
    ("chat_text device_id email file_name ipv4 ipv6 mac meeting_id meeting_title phone seen_name serial transcript uuid").split()
)
"""Every name a detector gives a field (``fields.detectors``); policies name them (``egressaudit.policy``)."""


_NORM_STRIP = re.compile(r"[\s_.\-]")
_NORM_CACHE: dict[str, str] = {}
_CACHE_MAX = 50_000


def _norm(key: str) -> str:
    n = _NORM_CACHE.get(key)
    if n is None:
        if len(_NORM_CACHE) >= _CACHE_MAX:
            _NORM_CACHE.clear()
        n = _NORM_CACHE[key] = _NORM_STRIP.sub("", key).lower()
    return n


EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")
UUID = re.compile(r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$")
MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}$|^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$")
IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
PHONE_PLUS = re.compile(r"^\+[1-9][\d \-().]{5,22}$")
PHONE_NANP = re.compile(r"^(?:\+?1[ .\-]?)?\(?[2-9]\d{2}\)?[ .\-]?[2-9]\d{2}[ .\-]\d{4}$")
PHONE_NATIONAL = re.compile(r"^0\d{1,4}[ \-/]\d{2,4}(?:[ \-]?\d{2,4}){1,3}$")
DATE_LIKE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$")
ID_LIKE = re.compile(r"^[A-Za-z0-9:_\-{}.=+/|]{6,256}$")
IDENT = re.compile(r"^[a-z0-9]+(?:[._:/\-][a-z0-9]+)+$")
MEETING_NUMBER = re.compile(r"^\d{3}[ \-]?\d{3,4}[ \-]?\d{3,4}$")
TEAMS_THREAD = re.compile(r"19:meeting_[A-Za-z0-9_\-]{10,}@thread\.(?:v2|skype)")
ZOOM_URL = re.compile(r"\bzoom(?:gov)?\.(?:us|com)/(?:j|w|wc(?:/join)?|s|my)/\d{9,11}\b")
MEET_CODE = re.compile(r"^(?:https://meet\.google\.com/)?[a-z]{3}-[a-z]{4}-[a-z]{3}$")
FILE_EXT = (
    "pdf doc docx xls xlsx ppt pptx key pages numbers odt ods odp rtf txt md csv tsv json xml html htm eml msg ics vcf "
    "png jpg jpeg gif bmp tif tiff heic heif webp svg psd ai raw "
    "mp4 mov avi mkv webm m4v wmv mp3 m4a wav aac flac ogg opus wma "
    "zip rar 7z tar gz tgz bz2 xz dmg iso apk ipa"
).split()
FILE_NAME = re.compile(r"^[^/\\:*?\"<>|\r\n\t]{1,200}\.(" + "|".join(FILE_EXT) + r")$", re.IGNORECASE)

PHONE_KEYS = frozenset(("phone phonenumber mobile mobilenumber msisdn tel telephone cellphone phoneno callerid callernumber").split())
DEVICE_KEYS = frozenset(
    (
        "deviceid deviceuuid deviceguid deviceidentifier devid installid installationid appinstanceid advertisingid adid idfa "
        "idfv gaid aaid androidid hardwareid hwid machineid machineguid anonymousid anonid udid imei meid deviceserial "
        "devicefingerprint clientinstallid localid sqmid msftinternalmachineid telemetryid"
    ).split()
)
DEVICE_PARENT = re.compile(r"device|machine|hardware|install", re.IGNORECASE)
SERIAL_KEY = re.compile(r"serial|^sn$|^serialno$", re.IGNORECASE)
MEETING_KEYS = frozenset(
    (
        "meetingid meetingnumber meetingno meetingnum meetinguuid meetingcode confid conferenceid confno conferencenumber "
        "conferencecode confnumber zoommeetingid webinarid mn meeting callid threadid roomid meetingroomid mtid meetinglink "
        "joinurl meetingurl"
    ).split()
)
MEETING_NUMBER_KEYS = frozenset(("meeting mn meetingid meetingnumber meetingno meetingnum confno confid conferenceid zoommeetingid id").split())
TITLE_KEYS = frozenset(
    (
        "meetingtitle meetingtopic topic subject meetingsubject conferencename conferencetitle meetingname roomname callsubject "
        "calltitle eventtitle webinartitle webinartopic"
    ).split()
)
TITLE_GENERIC = {"title", "name"}
TITLE_PARENT = re.compile(r"meeting|conference|webinar|conf$|^call$|calendar", re.IGNORECASE)
CHAT_KEYS = frozenset(("chat chatmessage chattext chatcontent messagetext messagebody chatbody imtext").split())
CHAT_GENERIC = {"message", "text", "body", "content", "msg", "plaintext", "richtext", "html"}
CHAT_PARENT = re.compile(r"chat|messag|conversation|^im$|^dm$|comment|reply|reaction", re.IGNORECASE)
FILE_KEYS = frozenset(("filename originalfilename attachmentname documentname uploadfilename fname file filepath localpath").split())
TRANSCRIPT_KEYS = frozenset(
    (
        "transcript transcription transcripttext caption captions captiontext closedcaption closedcaptions subtitle subtitles "
        "livecaption speechtext recognizedtext utterance recognition"
    ).split()
)


VERSION_KEY = re.compile(r"version|ver$|build|release")
PHONE_LOOSE = re.compile(r"\+?[\d \-().]{7,24}")
SERIAL_VALUE = re.compile(r"[A-Za-z0-9\-_./: ]+")
DIGITS_DOTS = re.compile(r"[\d.]+")
_ASCII_ALPHA = re.compile(r"[A-Za-z]")
_ASCII_DIGIT = re.compile(r"[0-9]")
_DEL_DIGITS = str.maketrans("", "", "0123456789")
_DEL_PHONE_CHARS = str.maketrans("", "", "0123456789 +-()./")  # all the phone patterns allow (\d is 0-9 in ASCII text)
_EMPTY: frozenset[str] = frozenset()


def _digits(s: str) -> int:
    """How many characters of ``s`` are digits (``str.isdigit``)."""
    if s.isascii():
        return len(s) - len(s.translate(_DEL_DIGITS))
    return sum(map(str.isdigit, s))


def _id_like(s: str) -> bool:
    s = s.strip()
    if not ID_LIKE.match(s):
        return False
    # ID_LIKE only matches ASCII (s is stripped, so "$" cannot stop before a newline)
    if not _ASCII_DIGIT.search(s):
        return False
    core = s.replace("-", "").replace("{", "").replace("}", "")
    return len(set(core)) > 2  # 00000000-0000-..., ffffffff: placeholders


def _is_phone(s: str, phone_key: bool) -> bool:
    s = s.strip()
    if s.isascii() and s.translate(_DEL_PHONE_CHARS):
        return False  # a character none of the patterns allows (hex ids, words): no regex needed
    if len(s) > 32 or DATE_LIKE.match(s):
        return False
    d = _digits(s)
    if not 7 <= d <= 15:
        return False
    if PHONE_PLUS.match(s) and not IPV4.match(s.lstrip("+")):
        return True
    if PHONE_NANP.match(s) or PHONE_NATIONAL.match(s):
        return True
    return phone_key and PHONE_LOOSE.fullmatch(s) is not None


#: the connection address of an ICE candidate ("candidate:1 1 udp 2122260223 192.0.2.2 54321 typ host") or an SDP c= line
ICE_ADDR = re.compile(r"(?:candidate:\S+ \d+ (?:udp|tcp|UDP|TCP) \d+ |c=IN IP[46] )([0-9A-Fa-f:.]+)")


def _is_ipv4(s: str) -> bool:
    if not 7 <= len(s) <= 15 or not IPV4.match(s):
        return False
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True


def _is_ipv6(s: str) -> bool:
    if s.count(":") < 2 or len(s) > 64:
        return False
    s = s.strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return not ip.is_unspecified


def _has_letters(s: str) -> bool:
    if s.isascii():
        return _ASCII_ALPHA.search(s) is not None
    return any(map(str.isalpha, s))


def _wordy(s: str) -> bool:
    """Natural-language-ish text (not an identifier, number, enum or URL)."""
    s = s.strip()
    if not s or not _has_letters(s) or "://" in s[:12]:
        return False
    if " " in s:
        return True
    if IDENT.match(s):  # client.metrics, audio_device, api/v1: names, not prose
        return False
    return not (UUID.match(s) or (_id_like(s) and _digits(s) * 3 >= len(s)))


@dataclass
class _Ctx:
    key: str  # normalised key of the value (the list's key for list items; "" at the root)
    parent: str  # normalised key above it
    path_keys: tuple[str, ...]  # normalised named keys from the root


class _Prof:
    """What the detectors decide from a value's key alone (its key, the key above it, and whether a key further up is chat-like)."""

    __slots__ = (
        "key",
        "chat_below",
        "phone_key",
        "ipv4_ok",
        "device_int",
        "device_str",
        "serial",
        "meet_key",
        "meet_loose",
        "meet_num",
        "meet_int",
        "title",
        "chat",
        "transcript",
        "file_key",
        "int_any",
    )

    def __init__(self, key: str, parent: str, chat_above: bool) -> None:
        self.key = key
        # whether a key above this one's children is chat-like (for a child, path_keys[:-1] = this path's keys)
        self.chat_below = chat_above or CHAT_PARENT.search(key) is not None
        self.phone_key = key in PHONE_KEYS
        self.ipv4_ok = VERSION_KEY.search(key) is None
        self.device_int = key in DEVICE_KEYS or (key in ("id", "uuid") and DEVICE_PARENT.search(parent) is not None)
        self.device_str = key in DEVICE_KEYS or (key in ("id", "uuid", "guid", "localid") and DEVICE_PARENT.search(parent) is not None)
        self.serial = SERIAL_KEY.search(key) is not None
        self.meet_key = key in MEETING_KEYS
        self.meet_loose = key not in ("meeting", "mn")
        self.meet_num = key in MEETING_NUMBER_KEYS and (key != "id" or TITLE_PARENT.search(parent) is not None)
        self.meet_int = self.meet_key and self.meet_loose
        self.title = key in TITLE_KEYS or (key in TITLE_GENERIC and TITLE_PARENT.search(parent) is not None)
        self.chat = key in CHAT_KEYS or (key in CHAT_GENERIC and chat_above)
        self.transcript = key in TRANSCRIPT_KEYS
        self.file_key = key in FILE_KEYS
        self.int_any = self.phone_key or self.meet_num or self.meet_int or self.device_int or self.serial


_PROFS: dict[tuple[str, str, bool], _Prof] = {}
_CHILD: dict[tuple[_Prof, str], _Prof] = {}


def _prof(key: str, parent: str, chat_above: bool) -> _Prof:
    k = (key, parent, chat_above)
    p = _PROFS.get(k)
    if p is None:
        if len(_PROFS) >= _CACHE_MAX:
            _PROFS.clear()
            _CHILD.clear()
        p = _PROFS[k] = _Prof(key, parent, chat_above)
    return p


def _child(prof: _Prof, raw_key: str) -> _Prof:
    """The profile of the value under dict key ``raw_key`` of a dict whose own profile is ``prof``."""
    k = (prof, raw_key)
    c = _CHILD.get(k)
    if c is None:
        c = _prof(_norm(raw_key), prof.key, prof.chat_below)
        if len(_CHILD) >= _CACHE_MAX:
            _CHILD.clear()
        _CHILD[k] = c
    return c


def _ctx_prof(ctx: _Ctx) -> _Prof:
    return _prof(ctx.key, ctx.parent, any(CHAT_PARENT.search(k) for k in ctx.path_keys[:-1]))


def value_detectors(value: object, ctx: _Ctx, seen: frozenset[str]) -> set[str]:
    """What a single value, under its key, looks like."""
    return set(_detect(value, _ctx_prof(ctx), seen))


def _detect(value: object, prof: _Prof, seen: frozenset[str]) -> frozenset[str] | set[str]:
    if value is None or isinstance(value, bool):
        return _EMPTY
    if isinstance(value, str):
        return _detect_str(value, prof, seen)
    if isinstance(value, int | float):
        return _detect_number(value, prof) if prof.int_any else _EMPTY
    return _EMPTY


def _detect_number(value: float, prof: _Prof) -> set[str] | frozenset[str]:
    if isinstance(value, float) and not value.is_integer():
        return _EMPTY
    out: set[str] = set()
    iv = int(value)
    text = str(iv)
    if prof.phone_key and 7 <= len(text.lstrip("-")) <= 15:
        out.add("phone")
    if prof.meet_num and 9 <= len(text) <= 11:
        out.add("meeting_id")
    elif prof.meet_int and iv > 0 and len(text) >= 6:
        out.add("meeting_id")
    if prof.device_int and len(text) >= 6:
        out.add("device_id")
    if prof.serial and len(text) >= 4:
        out.add("serial")
    return out


def _detect_str(value: str, prof: _Prof, seen: frozenset[str]) -> set[str] | frozenset[str]:
    s = value.strip()
    if not s:
        return _EMPTY
    out: set[str] = set()
    if seen and s.casefold() in seen:
        out.add("seen_name")
    n = len(s)
    short = n <= 256
    # identifiers by shape
    if "@" in s and EMAIL.search(s[:MAX_TEXT]):
        out.add("email")
    if short:
        if 36 <= n <= 38 and UUID.match(s) and len(set(s.replace("-", "").strip("{}"))) > 1:
            out.add("uuid")
        if (
            (n == 14 or n == 17)
            and MAC.match(s)
            and s.replace(":", "").replace("-", "").replace(".", "").strip("0")
            and s.casefold() != "ff:ff:ff:ff:ff:ff"
        ):
            out.add("mac")
        if prof.ipv4_ok and 7 <= n <= 15 and _is_ipv4(s):
            out.add("ipv4")
        if ":" in s and _is_ipv6(s):
            out.add("ipv6")
        if n >= 7 and _is_phone(s, prof.phone_key):  # (which counts the digits itself)
            out.add("phone")
    # addresses inside ICE candidates and SDP (WebRTC stats and signalling leak the host's addresses this way)
    if "candidate:" in s or "c=IN IP" in s:
        for m in ICE_ADDR.finditer(s[:MAX_TEXT]):
            addr = m.group(1)
            if _is_ipv4(addr):
                out.add("ipv4")
            elif ":" in addr and _is_ipv6(addr):
                out.add("ipv6")
    # identifiers by key name
    if short and prof.device_str:
        if _id_like(s) or UUID.match(s):
            out.add("device_id")
    if short and prof.serial and n >= 4 and SERIAL_VALUE.fullmatch(s) and s.casefold() not in ("unknown", "none", "null"):
        out.add("serial")
    if short and prof.meet_key and (prof.meet_loose or MEETING_NUMBER.match(s)) and (_id_like(s) or MEETING_NUMBER.match(s)):
        out.add("meeting_id")
    elif short and prof.meet_num and MEETING_NUMBER.match(s):
        out.add("meeting_id")
    if (
        ("19:meeting_" in s and TEAMS_THREAD.search(s[:MAX_TEXT]))
        or ("zoom" in s and ZOOM_URL.search(s[:MAX_TEXT]))
        or (short and (n == 12 or n == 36) and MEET_CODE.match(s))
    ):
        out.add("meeting_id")
    # customer content
    if prof.title and _wordy(s):
        out.add("meeting_title")
    if prof.chat and _wordy(s):
        out.add("chat_text")
    if prof.transcript and _wordy(s):
        out.add("transcript")
    if short and "." in s and "://" not in s:
        base = s[max(s.rfind("/"), s.rfind("\\")) + 1 :]
        if "." in base:
            if FILE_NAME.match(base) and not _is_ipv4(s) and not DIGITS_DOTS.fullmatch(base):
                out.add("file_name")
            elif prof.file_key and _has_letters(base) and " " not in base.strip()[:1]:
                out.add("file_name")
    return out


# -- walking -----------------------------------------------------------------------


def _clipped_json(node: object) -> str:
    """The first :data:`MAX_TEXT` characters of ``node`` as JSON, encoding no more of it than that.

    (``json.dumps`` of the whole subtree cost its full size, and raised RecursionError on a subtree nested
    about a thousand deep.)
    """
    out: list[str] = []
    n = 0
    try:
        for chunk in json.JSONEncoder(default=str, check_circular=False).iterencode(node):
            out.append(chunk)
            n += len(chunk)
            if n >= MAX_TEXT:
                break
    except (RecursionError, ValueError):
        out.append("…")
    return "".join(out)[:MAX_TEXT]


@dataclass(slots=True)
class _Acc:
    first: object
    types: set[str] = field(default_factory=set)
    count: int = 0
    scanned: int = 0
    detectors: set[str] = field(default_factory=set)


_TYPE_NAMES: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    Varint: "varint",
    Fixed32: "fixed32",
    Fixed64: "fixed64",
    int: "int",
    float: "float",
    str: "string",
    bytes: "bytes",
    bytearray: "bytes",
    memoryview: "bytes",
    dict: "object",
    list: "list",
    tuple: "list",
}


def inventory(
    tree: object, *, salt: bytes, keep_values: bool = False, seen_names: Collection[str] = (), cuts: Counter[str] | None = None
) -> list[dict[str, Any]]:
    """One row per distinct key path of ``tree``: key_path, value_type, count, detectors, value_hash, value, value_length.

    ``value_hash`` is :func:`hash_value` of the first value at the path;
    ``value`` is that value's canonical text only when ``keep_values``.
    ``seen_names`` (e.g. display names seen in other bodies) fire
    ``seen_name`` on equal values, compared case-insensitively.
    A walk stopped at :data:`MAX_CONTAINERS` is counted in ``cuts`` as ``inventory_cut``.
    """
    seen = frozenset(n.strip().casefold() for n in seen_names if isinstance(n, str) and len(n.strip()) >= 2)
    accs: dict[str, _Acc] = {}
    memo: dict[tuple[_Prof, str], frozenset[str] | set[str]] = {}  # string values repeat a lot in batches
    type_names = _TYPE_NAMES
    child_cache = _CHILD
    # per key path of a dict, per key: [key path, key profile, accumulator once a leaf was seen there] -- the same for
    # every event of a batch, so each key costs one lookup
    slots_of: dict[str, dict[str, list[Any]]] = {}

    def leaf(path: str, prof: _Prof, value: object) -> _Acc:
        acc = accs.get(path)
        if acc is None:
            if len(accs) >= MAX_PATHS:
                path = "<more>"
                acc = accs.get(path)
            if acc is None:
                acc = accs[path] = _Acc(first=value)
        acc.count += 1
        tn = type_names.get(type(value))
        acc.types.add(tn if tn is not None else value_type(value))
        if acc.scanned < MAX_SCANNED:
            acc.scanned += 1
            if type(value) is str:
                mk = (prof, value)
                found = memo.get(mk)
                if found is None:
                    found = memo[mk] = _detect_str(value, prof, seen)
            else:
                found = _detect(value, prof, seen)
            if found:
                acc.detectors |= found
        return acc

    # every leaf, depth first in document order; empty dicts and lists are not leaves (recursion is bounded by MAX_DEPTH)
    budget = [MAX_CONTAINERS]

    def visit(node: object, path: str, prof: _Prof, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            return
        if depth >= MAX_DEPTH:
            if isinstance(node, dict | list | tuple):  # too deep: one leaf
                node = _clipped_json(node)
            leaf(path or "$", prof, node)
            return
        depth += 1
        if isinstance(node, dict):
            slots = slots_of.get(path)
            if slots is None:
                slots = slots_of[path] = {}
            for k, v in node.items():
                ks = k if type(k) is str else str(k)
                slot = slots.get(ks)
                if slot is None:
                    cprof = child_cache.get((prof, ks))
                    if cprof is None:
                        cprof = _child(prof, ks)
                    slot = slots[ks] = [f"{path}.{ks}" if path else ks, cprof, None]
                tv = type(v)
                if tv is dict or tv is list or (tv is not str and isinstance(v, dict | list | tuple)):
                    if budget[0] <= 0:
                        budget[0] = -1
                        break
                    visit(v, slot[0], slot[1], depth)
                    continue
                acc = slot[2]
                if acc is None:  # the first leaf at this key path (key "" at the root: "$")
                    slot[2] = leaf(slot[0] or "$", slot[1], v)
                    continue
                # leaf(), inlined: most leaves are dict values
                acc.count += 1
                tn = type_names.get(tv)
                acc.types.add(tn if tn is not None else value_type(v))
                if acc.scanned < MAX_SCANNED:
                    acc.scanned += 1
                    cprof = slot[1]
                    if tv is str:
                        mk = (cprof, v)
                        found = memo.get(mk)
                        if found is None:
                            found = memo[mk] = _detect_str(v, cprof, seen)
                    elif (tv is int or tv is float) and not cprof.int_any:
                        continue  # numbers only matter under identifier-like keys
                    else:
                        found = _detect(v, cprof, seen)
                    if found:
                        acc.detectors |= found
        elif isinstance(node, list | tuple):
            sub = path + "[]"
            for v in node:
                if isinstance(v, dict | list | tuple):
                    if budget[0] <= 0:
                        budget[0] = -1
                        break
                    visit(v, sub, prof, depth)
                else:
                    leaf(sub, prof, v)
        else:
            leaf(path or "$", prof, node)

    visit(tree, "", _prof("", "", False), 0)
    if budget[0] < 0 and cuts is not None:
        cuts["inventory_cut"] += 1
    rows: list[dict[str, Any]] = []
    for path, acc in accs.items():
        text = canonical_text(acc.first)
        types = acc.types - {"null"} or acc.types
        first = acc.first
        rows.append(
            {
                "key_path": path,
                "value_type": ",".join(sorted(types)),
                "count": acc.count,
                "detectors": sorted(acc.detectors),
                "value_hash": _hash_text(salt, text),
                "value": text if keep_values else None,
                "value_length": len(bytes(first)) if isinstance(first, bytes | bytearray | memoryview) else len(text),
            }
        )
    return rows
