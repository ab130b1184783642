"""xenevt: drive and inspect Xen event channels (FIFO ABI)."""

__version__ = "0.1.0"
