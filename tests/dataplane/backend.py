"""Moved to :mod:`tests.support.backend`; kept for the modules that still import it here."""

from tests.support.backend import CHUNK, Backend, Seen, encode_frame, read_frame

__all__ = ["CHUNK", "Backend", "Seen", "encode_frame", "read_frame"]
