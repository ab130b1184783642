"""Read a raw dump saved earlier (``xenevt dump --raw FILE`` or ``Host.save_raw``), with no host at all:
its queues, the words that are not at rest, and doctor's verdict on it.

Usage: read_raw_dump.py FILE
"""

import sys

import xenevt


def main(path: str) -> int:
    source = xenevt.Source.raw(path)
    for d in xenevt.read_dump(source):
        print(f"domain {d.domain} ({d.abi}) from {d.source}")
        if d.abi == "FIFO":
            for v in d.vcpus:
                for q in v.queues:
                    print(f"  vCPU {q.vcpu} priority {q.priority}: {' -> '.join(map(str, q.chain)) or 'empty'}")
            for w in d.words:
                print(f"  port {w.port}: {w.flags}")
        else:
            for p in d.ports:
                print(f"  port {p.port}: {p.flags}")
    print(f"doctor: {xenevt.doctor(source).verdict}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
