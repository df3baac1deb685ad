"""The HTTP-level audit: mitmproxy addon, body decoding and parsing, field inventory, HAR export."""
