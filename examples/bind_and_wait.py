"""Bind a port, send on it, and wait for the event: the smallest loop of a Xen driver.

On the simulator (no Xen here) a host is made in the default place (or $XENEVT_STATE) if there is none;
in dom0 on real Xen the same script runs on the real event channels (both ends are this process's ports).
Prints the port the event came on; exits 1 if none came within the timeout.
"""

import sys

import xenevt


def main() -> int:
    with xenevt.open(create=True) as host:
        p = host.bind_unbound(0, 0)             # a port of dom0 that dom0 itself may connect to
        q = host.bind_interdomain(0, 0, p)      # the other end: a loopback channel p <-> q
        with host.events(0, timeout=0.5) as ev:  # Xen sets a new interdomain port pending: take that first
            list(ev)
        host.notify(0, q)                       # raised on p
        with host.events(0, count=1, timeout=10.0) as ev:
            got = list(ev)
        host.close(0, q)
        host.close(0, p)
    if got != [p]:
        print(f"no event on port {p} (got {got})", file=sys.stderr)
        return 1
    print(f"event on port {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
