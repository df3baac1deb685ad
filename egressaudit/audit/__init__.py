"""The jobs, as functions any program can call (the CLI is a thin layer over them).

- :mod:`egressaudit.audit.analyze`: capture files -> flows -> classified flows table and the packet part of the manifest
- :mod:`egressaudit.audit.files`: :func:`~egressaudit.audit.files.analyze_files`, captures and saved HTTP flows into a
  session folder (``egressaudit analyze``)
- :mod:`egressaudit.audit.live`: :func:`~egressaudit.audit.live.capture_session` (``egressaudit capture``) and
  :func:`~egressaudit.audit.live.recover` (a killed capture, analysed afterwards)
"""
