"""The journal page: an update of more than one record written as an intent, and what a lock holder finishes.

``transact`` writes the intent record (statefile.py's docstring), commits it with one aligned store, has
``Effects.apply`` carry it out and clears it; ``recover`` finishes what a process killed mid-update left (the
intent redone whole, a raise under way finished at least once, its vCPU's queues mended) and is what the host
runs on each take of the lock (``HostFile.on_take``) and at its open.  A read-only host replays into its
private copy only (host.SimReadHost).
"""

from __future__ import annotations

import os
import struct

from .. import abi
from ..engine.layout import ABI_FIFO
from ..errors import StateError
from ..ports import chan_is_open
from .consumers import Consumers
from .effects import Effects
from .statefile import (
    ENTRIES,
    ENTRY,
    INTENT,
    INTENT_COMMITTED,
    MAX_INTENT_ENTRIES,
    OP_CODES,
    RAISE,
    check_journal,
    intent_crc,
    read_raise,
)
from .store import HostFile

_INTENT_TAIL = struct.Struct("<7I")  # INTENT_HEADER after its state word


class Journal:
    """The journal of the open ``file``: its entries carried out by ``effects``; a killed consumer's vCPU mended
    by ``consumers``."""

    def __init__(self, file: HostFile, effects: Effects, consumers: Consumers):
        self.file = file
        self.effects = effects
        self.consumers = consumers

    def finish(self) -> None:
        """What a lock holder runs first: recovery, if the journal says an update was cut short."""
        if self.file.journal_marked():
            self.recover()

    def transact(self, op: str, caller: int, entries: list[tuple[int, int, int, bytes]]) -> None:
        """Write the intent record, commit it with one aligned store, apply it, clear it (statefile's docstring)."""
        if len(entries) > MAX_INTENT_ENTRIES:
            raise StateError(f"an update of {len(entries)} steps does not fit the intent record "
                             f"({MAX_INTENT_ENTRIES})")
        mm, jw, code = self.file.mm, self.file.jw, OP_CODES[op]
        raw = b"".join(ENTRY.pack(kind, domid, index, 0, value) for kind, domid, index, value in entries)
        mm[self.file.journal + ENTRIES: self.file.journal + ENTRIES + len(raw)] = raw
        pid = os.getpid()
        seq = (jw[(INTENT + 4) // 4] + 1) & 0xFFFFFFFF
        _INTENT_TAIL.pack_into(mm, self.file.journal + INTENT + 4, seq, code, caller, pid, len(entries),
                               intent_crc(code, caller, pid, len(entries), raw), 0)  # every field but state
        jw[INTENT // 4] = INTENT_COMMITTED  # the commit point: from here the next lock holder redoes it all
        self.effects.apply(entries)
        jw[INTENT // 4] = 0

    def recover(self) -> None:
        """Finish a raise and an intent record that their process left under way (statefile's docstring)."""
        intent = check_journal(self.file.mm, self.file.journal, self.file.path,
                               {d: dom.mem for d, dom in (self.file.domains | self.file.gone).items()})
        mark = read_raise(self.file.mm, self.file.journal)
        if mark is not None:
            domid, port = mark
            dom = self.file.domains.get(domid) or self.file.gone[domid]
            ch = dom.mem.chan(port)
            for v in sorted({ch.notify_vcpu, ch.last_vcpu}):
                self.consumers.repair_vcpu(dom, v)
            self.file.jw[RAISE // 4] = 0
            if dom.mem.event_abi != ABI_FIFO:
                if chan_is_open(ch) and port < abi.EVTCHN_2L_NR_CHANNELS:
                    self.effects.raise_event(dom, port)  # at least once: the pending bit may not have been set
                    self.effects.l2_announce(dom, port)  # ...or it was, and the selector bit or the upcall were not
            elif chan_is_open(ch) and dom.mem.word(port) is not None:
                self.effects.raise_event(dom, port)  # at least once: the event may not have been linked
            self.file.recovered.append(f"finished a raise of port {port} of domain {domid}")
        if intent is not None:
            self.effects.apply(intent.entries)
            self.file.jw[INTENT // 4] = 0
            self.file.recovered.append(f"redid {intent.op_name} by domain {intent.caller} (pid {intent.pid}): "
                                  f"{len(intent.entries)} step(s)")
