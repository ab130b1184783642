"""Ping-pong between two domains of a simulated host: dom1 offers a port, dom0 connects, and each side
answers the other's event N times.  (On real Xen a process acts as its own domain only: see bind_and_wait.)

Usage: ping_pong.py [ROUNDS] [STATE_DIR]
"""

import sys

import xenevt


def main(rounds: int = 10, state: str | None = None) -> int:
    with xenevt.open("sim", state=state, create=True) as host:
        a = host.bind_unbound(1, 0)              # dom1's end, waiting for dom0
        b = host.bind_interdomain(0, 1, a)       # dom0's end (set pending by the bind)
        with host.events(0, timeout=0.2) as ev:
            list(ev)
        for i in range(rounds):
            host.notify(1, a)                    # ping: dom1 -> dom0
            with host.events(0, count=1, timeout=5.0) as ev:
                if list(ev) != [b]:
                    print(f"round {i}: dom0 got no ping on port {b}", file=sys.stderr)
                    return 1
            host.notify(0, b)                    # pong: dom0 -> dom1
            with host.events(1, count=1, timeout=5.0) as ev:
                if list(ev) != [a]:
                    print(f"round {i}: dom1 got no pong on port {a}", file=sys.stderr)
                    return 1
        host.close(0, b)
        host.close(1, a)
    print(f"{rounds} round(s) of ping-pong between dom1 port {a} and dom0 port {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10, sys.argv[2] if len(sys.argv) > 2 else None))
