"""GnuTLS's own ``gnutls_x509_crt_get_dn()``, called through ctypes in a worker process.

The worker reads one hex certificate per line and answers ``dn HEX``, ``error`` (GnuTLS
could not write the DN) or ``refused`` (GnuTLS does not import the certificate). It is a
separate process because GnuTLS aborts on a few malformed subjects (an ``assert`` in
lib/x509/common.c); :meth:`GnuTLSOracle.dn` then answers ``crashed`` and starts a new worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys


class _Datum(ctypes.Structure):
    _fields_ = [("data", ctypes.c_char_p), ("size", ctypes.c_uint)]


def load_gnutls() -> ctypes.CDLL | None:
    """libgnutls, or None where it is not installed."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("gnutls") or "libgnutls.so.30")
    except OSError:
        return None


def _answer(gnutls: ctypes.CDLL, certificate_der: bytes) -> str:
    certificate = ctypes.c_void_p()
    if gnutls.gnutls_x509_crt_init(ctypes.byref(certificate)) != 0:
        raise RuntimeError("gnutls_x509_crt_init failed")
    try:
        datum = _Datum(certificate_der, len(certificate_der))
        if gnutls.gnutls_x509_crt_import(certificate, ctypes.byref(datum), 0) < 0:
            return "refused"
        size = ctypes.c_size_t(0)
        gnutls.gnutls_x509_crt_get_dn(certificate, None, ctypes.byref(size))
        buffer = ctypes.create_string_buffer(size.value + 1)
        if gnutls.gnutls_x509_crt_get_dn(certificate, buffer, ctypes.byref(size)) < 0:
            return "error"
        return "dn " + buffer.raw[: size.value].hex()
    finally:
        gnutls.gnutls_x509_crt_deinit(certificate)


def _serve() -> None:
    gnutls = load_gnutls()
    assert gnutls is not None
    for line in sys.stdin:
        sys.stdout.write(_answer(gnutls, bytes.fromhex(line.strip())) + "\n")
        sys.stdout.flush()


class GnuTLSOracle:
    """Ask GnuTLS for certificates' DNs; survives GnuTLS aborting."""

    def __init__(self) -> None:
        self._worker: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self._worker is None or self._worker.poll() is not None:
            self._worker = subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self._worker

    def dn(self, certificate_der: bytes) -> tuple[str, bytes | None]:
        """(``"dn"``, the DN bytes), or (``"error"``/``"refused"``/``"crashed"``, None)."""
        worker = self._start()
        assert worker.stdin is not None and worker.stdout is not None
        try:
            worker.stdin.write(certificate_der.hex() + "\n")
            worker.stdin.flush()
            answer = worker.stdout.readline().strip()
        except BrokenPipeError:
            answer = ""
        if not answer:
            worker.wait()
            return "crashed", None
        kind, _, value = answer.partition(" ")
        return kind, bytes.fromhex(value) if kind == "dn" else None

    def close(self) -> None:
        if self._worker is not None and self._worker.poll() is None:
            assert self._worker.stdin is not None
            self._worker.stdin.close()
            self._worker.wait()


if __name__ == "__main__":
    _serve()
