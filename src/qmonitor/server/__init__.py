"""The asyncio layer: sockets, sessions and the :class:`~qmonitor.server.monitor.Monitor`."""
