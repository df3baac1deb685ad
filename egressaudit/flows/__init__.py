"""Flows: IP packets to bidirectional 5-tuple flows with an idle timeout (after capture, before the dissectors).

* :mod:`~egressaudit.flows.table`: ``Flow`` and ``FlowTable``, one packet at a time
  (live capture, and the reference the tests hold the columnar table to).
* :mod:`~egressaudit.flows.columnar`: ``ColumnarFlowTable``, the same flows a buffer
  of frames at a time with numpy (offline ingest).
* :mod:`~egressaudit.flows.orient`: which end is the audited host (``local``/``remote``,
  ``out``/``in``) and the flow's Community ID.

Both tables hand the first payloads of each flow to
:class:`~egressaudit.dissect.inspect.Inspector`, which runs the dissectors bound in
:mod:`egressaudit.dissect.registry`; classification follows in :mod:`egressaudit.classify`.
"""
