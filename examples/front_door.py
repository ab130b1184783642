"""Issue 22's script: bind on dom1, notify, receive the event on dom0, run doctor and read its verdict; only
names in ``xenevt.__all__``.

On the simulator the sender is dom1.  On real Xen this process is dom0 and may bind only its own ports, so
both ends are dom0's (a loopback channel); everything else is the same.  Prints one JSON line; exits 0 when
the event arrived (and, on the simulator, doctor says healthy).
"""

import json
import sys

import xenevt


def main() -> int:
    with xenevt.open(create=True) as host:
        sender = 1 if host.kind == "sim" else 0
        offered = host.bind_unbound(sender, 0)                 # the sender's port, for dom0 to connect to
        port = host.bind_interdomain(0, sender, offered)      # dom0's end
        with host.events(0, timeout=0.5) as ev:               # the bind's own event (Xen sets the port pending)
            list(ev)
        sent = host.notify(sender, offered)
        with host.events(0, count=1, timeout=30.0) as ev:
            received = list(ev)
        diagnosis = host.doctor(domains=sorted({0, sender}))
        host.close(0, port)
        host.close(sender, offered)
        out = {"backend": host.kind, "sender": [sender, offered], "receiver": [0, port],
               "sent": sent.outcome, "received": received, "verdict": diagnosis.verdict,
               "findings": [f.title for f in diagnosis.findings]}
    print(json.dumps(out))
    ok = received == [port] and (out["backend"] != "sim" or diagnosis.healthy)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
