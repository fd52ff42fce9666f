"""The human monitor (HMP) without I/O: the command table, parsing, rendering, completion and
QEMU's line editor. The sessions that use them live in :mod:`qmonitor.server.hmp_session`,
:mod:`qmonitor.server.console` and :mod:`qmonitor.server.human`.
"""
