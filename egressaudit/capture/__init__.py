"""Capture: reading frames, from a file or an interface (the first room the data passes).

* :mod:`~egressaudit.capture.reader`: pcap and pcapng files (gzip too), streamed a
  read-ahead buffer at a time, damage counted, never raised mid-stream.
* :mod:`~egressaudit.capture.frames`: one frame to an ``IPPacket`` (link layer,
  IP, ports, tunnels) or a skip reason.
* :mod:`~egressaudit.capture.live`: a Linux packet socket to ``capture.pcapng``,
  with live flow counts.

Frames become flows in :mod:`egressaudit.flows`; what their payloads say is read
in :mod:`egressaudit.dissect`.
"""
