"""Fuzz targets for every reader of outside data, and one driver for all of them.

A target is a function ``run(data: bytes) -> None`` that feeds one input to a
reader and lets only the reader's documented error (a XenevtError subclass,
one line naming the file, line or offset and field) escape.  Anything else is a
bug: another exception, a crash (the worker process dies by a signal), or an
input that takes far longer than its size warrants.

Targets live one reader per module (``tests/fuzz/t_<reader>.py``), each
registering itself with :func:`target`; ``python -m tests.fuzz`` runs them.
"""
