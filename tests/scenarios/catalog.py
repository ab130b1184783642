"""The scenarios: dom0's event-channel hypercalls on its own ports, success and error paths.

Each expectation was read from Xen 4.17.7's and 4.20.4's xen/common/event_channel.c, event_channel.h and
event_fifo.c (the two agree on everything here); the comment names the check that decides it.  Flags: dom0's
ports here are unknown to its kernel, whose event array starts MASKED, so a raised event stays PENDING and
MASKED and is never LINKED.  dom0 has 2 vCPUs in the runner and on the default simulated host.
"""

from __future__ import annotations

from . import Scenario, parse
from .guest import GUEST_BINDS, GUEST_OPS

LOOP = """
    a = alloc_unbound 0 0          -> ok  a: unbound v0 dom0
    b = bind_interdomain 0 a       -> ok  a: interdomain v0 dom0:b +M  b: interdomain v0 dom0:a +PM
"""

_TEXT: dict[str, str] = {
    # EVTCHNOP_status: port_is_valid(), then ECS_FREE/ECS_RESERVED both read "closed"
    "status-port-0-is-closed": "status 0 -> ok closed v0",
    "status-far-port-einval": "status far -> EINVAL",
    "status-missing-domain-esrch": "status_of nodom 1 -> ESRCH",
    # EVTCHNOP_alloc_unbound: rcu_lock_domain_by_any_id(dom) only; remote_dom is stored unchecked
    "alloc-unbound-self": "a = alloc_unbound 0 0 -> ok  a: unbound v0 dom0 +M",
    "alloc-unbound-for-other-domain": "a = alloc_unbound 0 1 -> ok  a: unbound v0 dom1",
    "alloc-unbound-remote-missing-stored": "a = alloc_unbound 0 nodom -> ok  a: unbound v0 dom1234",
    "alloc-unbound-in-missing-domain-esrch": "a = alloc_unbound nodom 0 -> ESRCH",
    # EVTCHNOP_bind_interdomain: remote port valid, unbound and waiting for us, else EINVAL; local end pending
    "interdomain-loopback": LOOP,
    "interdomain-to-port-waiting-for-another": """
        a = alloc_unbound 0 nodom      -> ok
        b = bind_interdomain 0 a       -> EINVAL  a: unbound v0 dom1234""",
    "interdomain-to-bound-port": LOOP + "c = bind_interdomain 0 a -> EINVAL",
    "interdomain-to-closed-port": """
        a = alloc_unbound 0 0          -> ok
        close a                        -> ok  a: closed v0
        b = bind_interdomain 0 a       -> EINVAL""",
    "interdomain-to-missing-domain-esrch": "b = bind_interdomain nodom 1 -> ESRCH",
    "interdomain-to-far-port": "b = bind_interdomain 0 far -> EINVAL",
    "interdomain-to-port-0": "b = bind_interdomain 0 0 -> EINVAL",
    # EVTCHNOP_send: interdomain raises the peer, unbound is dropped silently, anything else EINVAL
    "send-raises-peer": LOOP + "send b -> ok  a: interdomain v0 dom0:b +PM",
    "send-on-unbound-dropped": """
        a = alloc_unbound 0 0          -> ok
        send a                         -> ok  a: unbound v0 dom0 +M""",
    "send-on-closed-einval": """
        a = alloc_unbound 0 0          -> ok
        close a                        -> ok
        send a                         -> EINVAL""",
    "send-on-port-0-einval": "send 0 -> EINVAL",
    "send-on-far-port-einval": "send far -> EINVAL",
    "send-on-virq-einval": """
        v = bind_virq 4                -> ok
        send v                         -> EINVAL""",
    # EVTCHNOP_close: ECS_FREE/ECS_RESERVED and invalid ports EINVAL; the interdomain peer goes back to unbound
    "close-unbound": """
        a = alloc_unbound 0 0          -> ok
        close a                        -> ok  a: closed v0""",
    "close-twice-einval": """
        a = alloc_unbound 0 0          -> ok
        close a                        -> ok
        close a                        -> EINVAL  a: closed v0""",
    "close-port-0-einval": "close 0 -> EINVAL",
    "close-far-port-einval": "close far -> EINVAL",
    "close-interdomain-peer-back-to-unbound": LOOP + "close b -> ok  a: unbound v0 dom0  b: closed v0",
    "close-while-pending-clears-pending": LOOP + "close b -> ok  b: closed v0 +M  a: unbound v0 dom0 +M",
    "close-peer-then-send-dropped": LOOP + """
        close a                        -> ok  b: unbound v0 dom0
        send b                         -> ok  b: unbound v0 dom0 +PM""",
    # EVTCHNOP_unmask: port_is_valid() only; a port no guest may use (closed) is left alone, 0
    "unmask-closed-noop": """
        a = alloc_unbound 0 0          -> ok
        close a                        -> ok
        unmask a                       -> ok  a: closed v0""",
    "unmask-port-0-noop": "unmask 0 -> ok",
    "unmask-far-port-einval": "unmask far -> EINVAL",
    "unmask-unbound-clears-mask": """
        a = alloc_unbound 0 0          -> ok  a: unbound v0 dom0 +M
        unmask a                       -> ok  a: unbound v0 dom0 +-""",
    # EVTCHNOP_set_priority: invalid port EINVAL, unusable (closed) EACCES, priority > 15 EINVAL
    "set-priority-bound": """
        a = alloc_unbound 0 0          -> ok
        set_priority a 3               -> ok""",
    "set-priority-out-of-range": """
        a = alloc_unbound 0 0          -> ok
        set_priority a 16              -> EINVAL""",
    "set-priority-closed-eacces": """
        a = alloc_unbound 0 0          -> ok
        close a                        -> ok
        set_priority a 3               -> EACCES""",
    "set-priority-port-0-eacces": "set_priority 0 3 -> EACCES",
    "set-priority-far-port-einval": "set_priority far 3 -> EINVAL",
    "set-priority-closed-out-of-range-eacces": """
        a = alloc_unbound 0 0          -> ok
        close a                        -> ok
        set_priority a 16              -> EACCES""",
    # EVTCHNOP_bind_vcpu: the vCPU first (ENOENT), then the port (EINVAL), then its state
    "bind-vcpu-unbound": """
        a = alloc_unbound 0 0          -> ok
        bind_vcpu a 1                  -> ok  a: unbound v1 dom0""",
    "bind-vcpu-interdomain": LOOP + "bind_vcpu b 1 -> ok  b: interdomain v1 dom0:a  a: interdomain v0 dom0:b",
    "bind-vcpu-bad-vcpu-enoent": """
        a = alloc_unbound 0 0          -> ok
        bind_vcpu a 99                 -> ENOENT  a: unbound v0 dom0""",
    "bind-vcpu-bad-vcpu-before-port": "bind_vcpu far 99 -> ENOENT",
    "bind-vcpu-bad-vcpu-before-closed-port": "bind_vcpu 0 99 -> ENOENT",
    "bind-vcpu-far-port-einval": "bind_vcpu far 1 -> EINVAL",
    "bind-vcpu-closed-einval": """
        a = alloc_unbound 0 0          -> ok
        close a                        -> ok
        bind_vcpu a 1                  -> EINVAL""",
    "bind-vcpu-global-virq": """
        v = bind_virq 4                -> ok  v: virq v0 virq4
        bind_vcpu v 1                  -> ok  v: virq v1 virq4""",
    "bind-vcpu-per-vcpu-virq-einval": """
        v = bind_virq 7 1              -> ok  v: virq v1 virq7
        bind_vcpu v 0                  -> EINVAL  v: virq v1 virq7""",
    # EVTCHNOP_bind_virq: VIRQ range (EINVAL), global on vCPU 0 only (EINVAL), vCPU (ENOENT), bound (EEXIST)
    "bind-virq-global": "v = bind_virq 4 -> ok  v: virq v0 virq4 +M",
    "bind-virq-twice-eexist": """
        v = bind_virq 4                -> ok
        w = bind_virq 4                -> EEXIST  v: virq v0 virq4""",
    "bind-virq-again-after-bind-vcpu-eexist": """
        v = bind_virq 4                -> ok
        bind_vcpu v 1                  -> ok
        w = bind_virq 4                -> EEXIST  v: virq v1 virq4""",
    "bind-virq-out-of-range-einval": "v = bind_virq 24 -> EINVAL",
    "bind-virq-global-on-vcpu-1-einval": "v = bind_virq 4 1 -> EINVAL",
    "bind-virq-global-on-missing-vcpu-einval": "v = bind_virq 4 99 -> EINVAL",
    "bind-virq-per-vcpu-on-vcpu-1": "v = bind_virq 7 1 -> ok  v: virq v1 virq7",
    "bind-virq-per-vcpu-on-missing-vcpu-enoent": "v = bind_virq 7 99 -> ENOENT",
    "bind-virq-per-vcpu-twice-on-two-vcpus": """
        v = bind_virq 7 0              -> ok
        w = bind_virq 7 1              -> ok  v: virq v0 virq7  w: virq v1 virq7""",
    "bind-virq-after-close": """
        v = bind_virq 4                -> ok
        close v                        -> ok  v: closed v0
        w = bind_virq 4                -> ok  w: virq v0 virq4""",
    # EVTCHNOP_reset: rcu_lock_domain_by_any_id() first (dom0's own reset would kill the runner: not run)
    "reset-missing-domain-esrch": "reset nodom -> ESRCH",
}

KNOWN: dict[str, dict] = {  # name: Scenario keyword arguments (xfail_xen=…, sim_only=…, sim_differs=…)
    # dom0's kernel never masks a word again for a port it does not know, and no dom0 process can: the word
    # stays unmasked, and every later scenario that gets this port back would see it so (xen-ci run 1)
    "unmask-unbound-clears-mask": {"sim_only": "it leaves a dom0 event word unmasked for good"},
}

SCENARIOS: list[Scenario] = [parse(name, text, **KNOWN.get(name, {})) for name, text in _TEXT.items()]

# --- run by the test guest on its own event channels (tests/scenarios/guest.py) --------------------------------
# Each starts on the 2-level ABI with nothing bound but its console (port 1).  FIFO = init_control on vCPU 0
# and one array page; a loopback pair (a waits for the guest itself, b is bound to it) raises events on a.
FIFO = """
    init_control 0 0               -> ok
    expand_array                   -> ok
"""
PAIR = """
    a = alloc_unbound self self    -> ok
    b = bind_interdomain self a    -> ok
"""
_GUEST_TEXT: dict[str, str] = {
    # 2-level (xen/common/event_2l.c): pending, then the selector and upcall unless masked
    "g-2l-loopback-send-raises": PAIR + "send b -> ok  a: interdomain v0 self:b +P",
    "g-2l-send-to-masked-port-pending-only": PAIR + """
        mask a                         -> ok
        send b                         -> ok  a: interdomain v0 self:b +PM""",
    "g-2l-unmask-re-raises-pending": PAIR + """
        bind_vcpu a 1                  -> ok  # (b's bind left vCPU 0's selector set: vCPU 1's is clean)
        mask a                         -> ok
        send b                         -> ok
        unmask a                       -> ok  a: interdomain v1 self:b +P""",
    "g-2l-send-twice-coalesces": PAIR + """
        send b                         -> ok
        send b                         -> ok""",
    "g-2l-event-to-vcpu-1": PAIR + """
        bind_vcpu a 1                  -> ok  a: interdomain v1 self:b
        send b                         -> ok""",
    "g-2l-close-clears-pending": PAIR + """
        send b                         -> ok
        close a                        -> ok  a: closed v0  b: unbound v0 self""",
    "g-2l-set-priority-enosys": PAIR + "set_priority a 3 -> ENOSYS",
    "g-2l-expand-array-eopnotsupp": "expand_array -> EOPNOTSUPP",
    "g-2l-ipi": """
        i = bind_ipi 0                 -> ok  i: ipi v0
        send i                         -> ok  i: ipi v0 +P""",
    "g-bind-ipi-missing-vcpu-enoent": "i = bind_ipi 5 -> ENOENT",
    "g-bind-ipi-on-vcpu-1": "i = bind_ipi 1 -> ok  i: ipi v1",
    "g-status-valid-range": """
        status self 63                 -> ok closed v0
        status self 64                 -> EINVAL""",
    "g-status-of-dom0-eperm": "status 0 1 -> EPERM",
    "g-alloc-unbound-in-dom0-eperm": "a = alloc_unbound 0 0 -> EPERM",
    # EVTCHNOP_init_control (event_fifo.c): vCPU (ENOENT), offset in the page and 8-byte aligned, one per vCPU
    "g-init-control": "init_control 0 0 -> ok",
    "g-init-control-missing-vcpu-enoent": "init_control 5 0 -> ENOENT",
    "g-init-control-misaligned-einval": "init_control 0 4 -> EINVAL",
    "g-init-control-past-page-einval": "init_control 0 4032 -> EINVAL",
    "g-init-control-last-offset": "init_control 0 4024 -> ok",
    "g-init-control-twice-einval": """
        init_control 0 0               -> ok
        init_control 0 64              -> EINVAL""",
    "g-init-control-bad-frame-stays-2l": "init_control 0 0 bad -> EINVAL",
    "g-init-control-second-vcpu": """
        init_control 0 0               -> ok
        init_control 1 0               -> ok""",
    # EVTCHNOP_expand_array
    "g-expand-array": FIFO,
    "g-expand-array-bad-frame-einval": """
        init_control 0 0               -> ok
        expand_array bad               -> EINVAL""",
    "g-expand-array-two-pages": FIFO + "expand_array -> ok",
    # FIFO queues (event_fifo.c's evtchn_fifo_set_pending) seen from inside
    "g-fifo-new-page-words-masked": FIFO + PAIR + "send b -> ok  a: interdomain v0 self:b +PM",
    "g-fifo-unmask-links": FIFO + PAIR + """
        send b                         -> ok
        unmask a                       -> ok  a: interdomain v0 self:b +PL""",
    "g-fifo-two-events-one-queue": FIFO + PAIR + """
        c = alloc_unbound self self    -> ok
        d = bind_interdomain self c    -> ok
        unmask a                       -> ok
        unmask c                       -> ok
        send b                         -> ok
        send d                         -> ok""",
    "g-fifo-priority-change-while-linked": FIFO + PAIR + """
        unmask a                       -> ok
        send b                         -> ok
        set_priority a 3               -> ok
        send b                         -> ok""",
    "g-fifo-set-priority-out-of-range": FIFO + PAIR + "set_priority a 16 -> EINVAL",
    "g-fifo-vcpu-move-while-linked": FIFO + PAIR + """
        init_control 1 0               -> ok
        unmask a                       -> ok
        send b                         -> ok
        bind_vcpu a 1                  -> ok
        send b                         -> ok""",
    "g-fifo-close-while-linked": FIFO + PAIR + """
        unmask a                       -> ok
        send b                         -> ok
        close a                        -> ok  a: closed v0
        c = alloc_unbound self self    -> ok""",
    "g-fifo-event-to-vcpu-without-control-block": FIFO + PAIR + """
        unmask a                       -> ok
        bind_vcpu a 1                  -> ok
        send b                         -> ok""",
    "g-fifo-deferred-until-expand": """
        init_control 0 0               -> ok""" + PAIR + """
        unmask a                       -> ok
        send b                         -> ok
        expand_array                   -> ok""",
    "g-fifo-2l-pending-kept-across-init-control": PAIR + """
        send b                         -> ok  a: interdomain v0 self:b +P""" + FIFO,
    "g-fifo-ipi-queued": FIFO + """
        i = bind_ipi 0                 -> ok
        unmask i                       -> ok
        send i                         -> ok""",
    # EVTCHNOP_reset of itself: every port closed, back on 2-level
    "g-reset-self-back-to-2l": FIFO + PAIR + """
        unmask a                       -> ok
        send b                         -> ok
        reset self                     -> ok""",
    "g-reset-self-loopback-both-ends": PAIR + """
        send b                         -> ok
        reset self                     -> ok  a: closed v0  b: closed v0""",
    "g-reset-dom0-eperm": "reset 0 -> EPERM",
    "g-reset-missing-domain-esrch": "reset nodom -> ESRCH",
}
GUEST_SCENARIOS: list[Scenario] = [parse(name, text, ops=GUEST_OPS, binds=GUEST_BINDS, **KNOWN.get(name, {}))
                                   for name, text in _GUEST_TEXT.items()]
BY_NAME = {s.name: s for s in SCENARIOS + GUEST_SCENARIOS}
