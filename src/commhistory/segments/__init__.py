"""Segments and send planning: who may and should get a message, now.

* :mod:`commhistory.segments.planning`: :func:`~commhistory.segments.planning.plan_send`
  splits candidate contacts into send now, deferred (with when) and excluded
  (with why), applying consent, suppression, frequency caps and quiet hours.

.. versionadded:: 0.4.0
"""
