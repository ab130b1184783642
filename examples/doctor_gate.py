"""A CI gate: fail the job when doctor finds a problem with the host's event channels.

Exits 0 when healthy, else prints each finding and exits with doctor's code (3 problems, 4 inconclusive).
With INTERVAL seconds, two samples are taken that far apart (storms, ports stuck across them).

Usage: doctor_gate.py [INTERVAL]
"""

import sys

import xenevt


def main(interval: float | None = None) -> int:
    with xenevt.open(create=True) as host:
        diagnosis = host.doctor(interval=interval)
    for f in diagnosis.findings:
        print(f"{f.severity.upper():8s} dom{f.domain} {f.ports}: {f.title}")
    for item in diagnosis.unread[:5]:
        print(f"UNREAD   {item}")
    print(f"doctor: {diagnosis.verdict} ({diagnosis.source})")
    return diagnosis.exit_code


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else None))
