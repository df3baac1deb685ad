"""Dissectors: what a flow's payloads say (host names, application protocols, media, vendors).

One module per protocol, each a set of pure parsers that cite their spec and return
None on bad input: ``dns``, ``tls``, ``http``, ``quic``, ``stun``, ``dtls``, ``rtp``,
``webrtc`` (RFC 7983's first-byte demultiplexing), ``zoom``, ``discord``.
:mod:`~egressaudit.dissect.registry` binds them to transports, ports and first
bytes, and :mod:`~egressaudit.dissect.inspect` (``Evidence``, ``Inspector``) runs
them on the payloads the flow tables of :mod:`egressaudit.flows` hand over.

The bindings of :data:`~egressaudit.dissect.registry.REGISTRY`, in the order they are tried
(a test checks this list against it):

=====================  =========  ==================  ======================================
binding                transport  ports               first bytes
=====================  =========  ==================  ======================================
dns                    UDP        53, 5353, 5355      any
quic                   UDP        443                 any (a long header, a public header or short headers start it)
zoom_sfu               UDP        8801-8810           1-5 (SFU types)
dns_tcp                TCP        53, 5353, 5355      any (claims the stream)
stun                   UDP        any                 0-3
zrtp                   UDP        any                 16-19
dtls                   UDP        any                 20-63
quic_any               UDP        any                 64-127, 192-255 (a known version's long header starts it)
turn_channel           UDP        any                 64-79
rtp_rtcp               UDP        any                 128-191
ms_turn                UDP        any                 255
zoom_p2p_media         UDP        any                 13, 15, 16, 30, 33-35
zoom_p2p_control       UDP        any                 31
discord_ip_discovery   UDP        any                 0
tls                    TCP        any (client)        22
http                   TCP        any (client)        65-90 (A-Z)
stun_tcp               TCP        any (client)        any
rtp_tcp                TCP        any (client)        any
=====================  =========  ==================  ======================================
"""
