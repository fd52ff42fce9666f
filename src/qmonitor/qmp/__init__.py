"""The QMP protocol without I/O: bytes in, requests out; replies and events in, bytes out."""
