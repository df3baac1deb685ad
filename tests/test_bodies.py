"""egressaudit.http.bodies: content decoding and body parsing, on bytes made by the real libraries and SDKs."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from typing import Any

import brotli
import pytest
import zstandard

from egressaudit.http import bodies
from egressaudit.http.bodies import Fixed32, Fixed64, Varint, decode_content, parse_body, sniff_magic

DOC = {
    "events": [
        {"event_type": "meeting_joined", "device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "time": 1763880000123 + i, "n": i} for i in range(50)
    ]
}
RAW = json.dumps(DOC).encode()


# -- decode_content ------------------------------------------------------------------


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", _raw_deflate),
        ("br", brotli.compress),
        ("zstd", lambda d: zstandard.ZstdCompressor(level=3).compress(d)),
        ("identity", lambda d: d),
        (None, lambda d: d),
        ("", lambda d: d),
        ("gzip, br", lambda d: brotli.compress(gzip.compress(d))),
        ("deflate,zstd", lambda d: zstandard.ZstdCompressor().compress(zlib.compress(d))),
    ],
)
def test_decode_content_round_trips(encoding: str | None, encode: Any) -> None:
    decoded, err = decode_content(encode(RAW), encoding)
    assert err is None and decoded == RAW


def test_decode_concatenated_members_and_frames() -> None:
    assert decode_content(gzip.compress(b"abc") + gzip.compress(b"def"), "gzip") == (b"abcdef", None)
    z = zstandard.ZstdCompressor()
    assert decode_content(z.compress(b"abc") + z.compress(b"def"), "zstd") == (b"abcdef", None)


def test_zstd_streamed_frame_without_content_size() -> None:
    buf = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(buf, closefd=False) as w:
        w.write(RAW)
    assert decode_content(buf.getvalue(), "zstd") == (RAW, None)


@pytest.mark.parametrize(
    ("encoding", "data", "reason"),
    [
        ("gzip", gzip.compress(RAW)[:-12], "error:truncated_gzip"),
        ("gzip", b"\x1f\x8b\x08\x00garbage-that-is-not-deflate", "error:bad_gzip"),
        ("gzip", RAW, "error:bad_gzip"),
        ("gzip", gzip.compress(RAW) + b"trailing junk", "error:trailing_data_gzip"),
        ("deflate", b"\x00\x01\x02\x03 not deflate at all", "error:bad_deflate"),
        ("br", brotli.compress(RAW)[:-8], "error:truncated_br"),
        ("br", b"\xff\xff\xff\xff not brotli", "error:bad_br"),
        ("zstd", zstandard.ZstdCompressor().compress(RAW)[:-6], "error:truncated_zstd"),
        ("zstd", b"not zstd at all", "error:bad_zstd"),
        ("compress", RAW, "error:unsupported_encoding"),
        ("gzip, lzma", RAW, "error:unsupported_encoding"),
    ],
)
def test_decode_content_errors_never_raise(encoding: str, data: bytes, reason: str) -> None:
    assert decode_content(data, encoding) == (None, reason)


def test_gzip_padded_with_zeros_is_accepted() -> None:
    assert decode_content(gzip.compress(RAW) + b"\x00" * 8, "gzip") == (RAW, None)


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", lambda d: brotli.compress(d, quality=5)),
        ("zstd", lambda d: zstandard.ZstdCompressor().compress(d)),
    ],
)
def test_decompression_bomb_is_refused(encoding: str, encode: Any) -> None:
    bomb = encode(b"\x00" * (64 << 20))  # 64 MiB of zeros: a few KiB or less on the wire
    assert len(bomb) < 100_000
    assert decode_content(bomb, encoding, limit=8 << 20) == (None, "error:too_large")
    # exactly at the limit is fine
    assert decode_content(encode(b"\x00" * 1000), encoding, limit=1000) == (b"\x00" * 1000, None)
    assert decode_content(encode(b"\x00" * 1001), encoding, limit=1000) == (None, "error:too_large")


def test_empty_encoded_body() -> None:
    assert decode_content(b"", "gzip") == (b"", None)
    assert decode_content(b"", None) == (b"", None)


# -- JSON family -------------------------------------------------------------------


def test_json_and_sizes() -> None:
    p = parse_body(RAW, "application/json")
    assert p.format == "json" and p.tree == DOC and p.size == len(RAW)
    assert parse_body(RAW, "application/vnd.amplitude+json").format == "json"
    assert parse_body(RAW, "text/plain").format == "json"  # navigator.sendBeacon posts JSON as text/plain
    assert parse_body(RAW, None).format == "json"
    assert parse_body(b"\xef\xbb\xbf" + RAW, "application/json").tree == DOC


@pytest.mark.parametrize("body", [b'{"a": 1,', b"{'single': 'quotes'}", b"\xff\xfe\x00{", b"NaN-ish garbage"])
def test_invalid_json_with_json_content_type(body: bytes) -> None:
    p = parse_body(body, "application/json")
    assert p.format == "error:invalid_json" and p.tree is None and p.size == len(body)


def test_ndjson() -> None:
    lines = [{"event": "a", "n": 1}, {"event": "b", "n": 2}, {"event": "c", "n": 3}]
    body = b"\n".join(json.dumps(x).encode() for x in lines) + b"\n"
    assert parse_body(body, "application/x-ndjson").tree == lines
    sniffed = parse_body(body, None)
    assert sniffed.format == "ndjson" and sniffed.tree == lines
    assert parse_body(body, "application/json").format == "ndjson"  # mislabelled batches still parse
    assert parse_body(b'{"a":1}\n{broken\n', "application/x-ndjson").format == "error:invalid_json"


def test_empty_body() -> None:
    p = parse_body(b"", "application/json")
    assert p.format == "empty" and p.tree is None and p.size == 0


def test_huge_body_is_not_parsed() -> None:
    big = b'{"x": "' + b"a" * (bodies.PARSE_LIMIT + 10) + b'"}'
    p = parse_body(big, "application/json")
    assert p.format == "error:too_large_to_parse" and p.tree is None and p.size == len(big)
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(bodies.PARSE_LIMIT)
    assert parse_body(video, "application/octet-stream").format == "binary:mp4"


def test_deeply_nested_json_does_not_raise() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert parse_body(deep, "application/json").format.startswith("error:")


# -- forms ---------------------------------------------------------------------------


def test_form_with_repeated_keys_and_json_values() -> None:
    body = b"client=zoom&tag=a&tag=b&props=%7B%22email%22%3A%22bob%40example.org%22%7D&empty="
    p = parse_body(body, "application/x-www-form-urlencoded")
    assert p.format == "form"
    assert p.tree == {"client": "zoom", "tag": ["a", "b"], "props": {"email": "bob@example.org"}, "empty": ""}
    assert parse_body(body, None).format == "form"


# -- multipart -------------------------------------------------------------------


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 8


def _form_data(boundary: str = "----egressaudit7MA4YWxkTrZu0gW") -> bytes:
    # the bytes requests/urllib3 would send for files={"file": ...}, data={"meeting_id": ...}
    import urllib3

    body, ctype = urllib3.encode_multipart_formdata(
        {
            "meeting_id": "85012345678",
            "file": ("Board minutes.pdf", PDF, "application/pdf"),
            "thumb": ("avatar.png", PNG, "image/png"),
        },
        boundary=boundary,
    )
    assert ctype == f"multipart/form-data; boundary={boundary}"
    return body


def test_multipart_parts() -> None:
    body = _form_data()
    for ctype in ("multipart/form-data; boundary=----egressaudit7MA4YWxkTrZu0gW", "multipart/form-data"):  # the recorder drops parameters
        p = parse_body(body, ctype)
        assert p.format == "multipart" and p.warning is None
        assert [(x.name, x.filename, x.content_type, x.size, x.magic) for x in p.parts] == [
            ("meeting_id", None, None, 11, None),
            ("file", "Board minutes.pdf", "application/pdf", len(PDF), "pdf"),
            ("thumb", "avatar.png", "image/png", len(PNG), "png"),
        ]
        assert p.tree == {"meeting_id": "85012345678"}  # the text fields form the tree
    assert parse_body(body, None).format == "multipart"


def test_truncated_multipart_keeps_what_arrived() -> None:
    body = _form_data()
    cut = body[: body.index(b"%PDF") + 100]
    p = parse_body(cut, "multipart/form-data")
    assert p.format == "multipart" and p.warning == "truncated_multipart"
    assert [(x.name, x.filename, x.size, x.magic) for x in p.parts] == [("meeting_id", None, 11, None), ("file", "Board minutes.pdf", 100, "pdf")]


def test_garbage_multipart() -> None:
    assert parse_body(b"this is not multipart", "multipart/form-data; boundary=xyz").format == "error:invalid_multipart"
    assert parse_body(b"no boundary anywhere", "multipart/form-data").format == "error:invalid_multipart"


# -- protobuf --------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(no: int, wire: int, payload: bytes) -> bytes:
    if wire == 2:
        payload = _varint(len(payload)) + payload
    return _varint(no << 3 | wire) + payload


def test_protobuf_encoding_examples_from_the_spec() -> None:
    # https://protobuf.dev/programming-guides/encoding/ : "08 96 01" is field 1 = 150; "12 07 74 65 73 74 69 6e 67" is field 2 = "testing"
    assert bodies.parse_protobuf(bytes.fromhex("089601")) == {"#1": 150}
    assert bodies.parse_protobuf(bytes.fromhex("120774657374696e67")) == {"#2": "testing"}
    assert bodies.parse_protobuf(bytes.fromhex("1a03089601")) == {"#3": {"#1": 150}}


def test_protobuf_wire_types_nesting_and_repeats() -> None:
    device = _field(1, 2, b"Pixel 8") + _field(2, 2, b"7c9e6679-7425-40de-944b-e07fc1f90ae7")
    msg = (
        _field(1, 0, _varint(1763880000))
        + _field(2, 1, (2**40 + 7).to_bytes(8, "little"))
        + _field(3, 5, (123456).to_bytes(4, "little"))
        + _field(4, 2, device)
        + _field(5, 0, _varint(1))
        + _field(5, 0, _varint(2))
        + _field(6, 2, b"\xff\xfe\x00\x01")  # neither text nor a message: bytes
    )
    p = parse_body(msg, "application/x-protobuf")
    assert p.format == "protobuf" and p.size == len(msg)
    tree = p.tree
    assert isinstance(tree, dict)
    assert tree == {
        "#1": 1763880000,
        "#2": 2**40 + 7,
        "#3": 123456,
        "#4": {"#1": "Pixel 8", "#2": "7c9e6679-7425-40de-944b-e07fc1f90ae7"},
        "#5": [1, 2],
        "#6": b"\xff\xfe\x00\x01",
    }
    assert type(tree["#1"]) is Varint and type(tree["#2"]) is Fixed64 and type(tree["#3"]) is Fixed32
    # sniffed without a content type too
    assert parse_body(msg, "application/octet-stream").format == "protobuf"


@pytest.mark.parametrize(
    "data",
    [
        _field(1, 2, b"abcdef")[:-2],  # length beyond the end
        _field(1, 0, b"\x96"),  # varint cut
        _field(1, 1, b"\x00" * 4),  # fixed64 cut
        bytes([0x0B, 0x00]),  # wire type 3 (group)
        bytes([0x0F]),  # wire type 7
        bytes([0x00, 0x01]),  # field number 0
    ],
)
def test_protobuf_rejects_inputs_it_cannot_consume(data: bytes) -> None:
    assert bodies.parse_protobuf(data) is None
    assert parse_body(data, "application/x-protobuf").format == "error:invalid_protobuf"


def test_grpc_frames() -> None:
    m = _field(1, 2, b"hello") + _field(2, 0, _varint(42))
    framed = b"\x00" + len(m).to_bytes(4, "big") + m
    p = parse_body(framed, "application/grpc")
    assert p.format == "protobuf" and p.tree == {"#1": "hello", "#2": 42}


# -- Bond ------------------------------------------------------------------------

# Bond Compact Binary v1 as OneCollector/Aria clients send it: field headers (id << 5 | type), varints, length-prefixed strings, BT_STOP.
BOND = bytes([0x29, 0x03]) + b"2.1" + bytes([0x49, 0x0C]) + b"Teams.Client" + bytes([0x06, 0xC0, 0x84, 0x3D, 0x00])


def test_bond_is_recognised_and_sized() -> None:
    p = parse_body(BOND, "application/bond-compact-binary")
    assert p.format == "bond" and p.size == len(BOND) and p.tree is None
    # no content type: the Aria collector host says so
    assert parse_body(BOND, None, host="mobile.pipe.aria.microsoft.com").format == "bond"
    assert parse_body(BOND, "application/x-bond-compact-binary").format == "bond"
    assert parse_body(BOND, None).format != "bond"


# -- Sentry envelopes ----------------------------------------------------------------


def _sentry_envelope() -> bytes:
    """The envelope the real sentry-sdk builds for one message with a user, a tag and an attachment."""
    sentry_sdk = pytest.importorskip("sentry_sdk")
    from sentry_sdk.transport import Transport

    got: list[bytes] = []

    class Capture(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            got.append(envelope.serialize())

    client = sentry_sdk.Client(
        dsn="https://abc123def456@o4501.ingest.sentry.io/4502", transport=Capture, default_integrations=False, release="confclient@5.17.1"
    )
    with sentry_sdk.isolation_scope() as scope:  # no global client is installed
        scope.set_client(client)
        sentry_sdk.set_user({"email": "alice.example@example.org", "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"})
        sentry_sdk.set_tag("meeting_id", "85012345678")
        scope.add_attachment(bytes=PDF, filename="minutes.pdf", content_type="application/pdf")
        sentry_sdk.capture_message("audio device lost")
    client.flush()
    client.close()
    assert len(got) == 1
    return got[0]


def test_sentry_envelope_from_the_real_sdk() -> None:
    env = _sentry_envelope()
    for ctype in ("application/x-sentry-envelope", None, "text/plain"):
        p = parse_body(env, ctype)
        assert p.format == "sentry_envelope", ctype
        tree = p.tree
        assert isinstance(tree, dict)
        assert "event_id" in tree["header"]
        types = [it["header"]["type"] for it in tree["items"]]
        assert types == ["event", "attachment"] or sorted(types) == ["attachment", "event"]
        (event,) = [it["payload"] for it in tree["items"] if it["header"]["type"] == "event"]
        assert event["user"]["email"] == "alice.example@example.org" and event["tags"]["meeting_id"] == "85012345678"
        assert [(x.name, x.filename, x.size, x.magic) for x in p.parts] == [("attachment", "minutes.pdf", len(PDF), "pdf")]


def test_sentry_envelope_newline_delimited_items() -> None:
    # items without "length": the payload runs to the next newline (the spec's "implicit length")
    env = b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","dsn":"https://e12d836b15bb49d7bbf99e64295d995b@sentry.io/42"}\n'
    env += b'{"type":"session"}\n{"sid":"abc","did":"bob@example.org","status":"ok"}\n'
    env += b'{"type":"event"}\n{"message":"hi"}'
    p = parse_body(env, "application/x-sentry-envelope")
    assert p.format == "sentry_envelope"
    assert isinstance(p.tree, dict) and [it["payload"] for it in p.tree["items"]] == [
        {"sid": "abc", "did": "bob@example.org", "status": "ok"},
        {"message": "hi"},
    ]
    assert parse_body(b'{"a":1}\nnot json\n', "application/x-sentry-envelope").format == "error:invalid_envelope"


# -- sniffing and magic ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "magic"),
    [
        (PNG, "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "jpeg"),
        (b"GIF89a\x01\x00", "gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (PDF, "pdf"),
        (gzip.compress(b"x"), "gzip"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "mp4"),
        (b"\x00\x00\x00\x20ftypqt  ", "mov"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm", "webm"),
        (b"OggS\x00\x02", "ogg"),
        (b"MDMP\x93\xa7\x00\x00", "minidump"),
        (b"hello world", None),
    ],
)
def test_magic(data: bytes, magic: str | None) -> None:
    assert sniff_magic(data) == magic


def test_zip_family() -> None:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>")
    assert sniff_magic(buf.getvalue()) == "docx"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("logs/zoom.log", "x")
    assert sniff_magic(buf.getvalue()) == "zip"
    assert parse_body(buf.getvalue(), "application/zip").format == "binary:zip"


def test_binary_and_text() -> None:
    assert parse_body(PNG, "image/png").format == "binary:png"
    assert parse_body(PNG, "application/octet-stream").magic == "png"
    assert parse_body(b"\x00\xff" * 64, "application/octet-stream").format == "binary:unknown"
    assert parse_body(bytes(range(256)), "image/x-custom").format == "binary:x-custom"
    assert parse_body("grüße, a log line\n".encode(), "text/plain").format == "text"
    assert parse_body(b"<xml/>", "application/xml").format == "text"


def test_parse_body_never_raises_on_random_bytes() -> None:
    import random

    rnd = random.Random(7)
    for ctype in (None, "application/json", "application/x-protobuf", "multipart/form-data", "application/x-sentry-envelope", "text/plain"):
        for n in (1, 2, 7, 100, 4000):
            p = parse_body(rnd.randbytes(n), ctype)
            assert isinstance(p.format, str) and p.size == n


# -- ceilings: every codec and chains of them ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip, br", lambda d: brotli.compress(gzip.compress(d), quality=5)),
        ("br, gzip", lambda d: gzip.compress(brotli.compress(d, quality=5))),
        ("zstd, deflate", lambda d: zlib.compress(zstandard.ZstdCompressor().compress(d))),
        ("gzip, gzip, gzip", lambda d: gzip.compress(gzip.compress(gzip.compress(d)))),
    ],
)
def test_decompression_bomb_in_a_chain_is_refused(encoding: str, encode: Any) -> None:
    bomb = encode(b"\x00" * (64 << 20))
    assert decode_content(bomb, encoding, limit=4 << 20) == (None, "error:too_large")


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("br", lambda d: brotli.compress(d, quality=5)),
        ("zstd", lambda d: zstandard.ZstdCompressor().compress(d)),
        ("gzip, br", lambda d: brotli.compress(gzip.compress(d), quality=5)),
    ],
)
def test_a_bomb_costs_about_its_ceiling_in_memory(encoding: str, encode: Any) -> None:
    """The output held at once stays under two stages' ceilings plus what one step of brotli or zstd input expands to (16 MiB)."""
    import tracemalloc

    bomb = encode(b"\x00" * (256 << 20))
    tracemalloc.start()
    try:
        assert decode_content(bomb, encoding, limit=8 << 20) == (None, "error:too_large")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * (8 << 20) + (16 << 20) + 4 * len(bomb), peak


def test_partial_decoding_of_every_codec() -> None:
    doc = RAW * 50
    for encoding, encode in (
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", zstandard.ZstdCompressor().compress),
    ):
        head = encode(doc)[:200]
        assert decode_content(head, encoding)[0] is None
        part, err = decode_content(head, encoding, partial=True)
        assert err is None and part is not None and doc.startswith(part), encoding
    assert decode_content(b"garbage!", "gzip", partial=True) == (None, "error:bad_gzip")  # a head must still be the codec


def test_sniff_magic_of_a_head_with_the_whole_size() -> None:
    bmp = b"BM" + (5000).to_bytes(4, "little") + bytes(4994)
    assert sniff_magic(bmp) == "bmp" and sniff_magic(bmp[:4096], 5000) == "bmp" and sniff_magic(bmp[:4096]) is None
