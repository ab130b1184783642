"""Who may make a call, and the lookups every call starts with: domain, port, vCPU, each checked.

``RULES`` is the one table of who may do what: every call the simulator answers (a hypercall, a guest kernel's
own act, a toolstack operation, a read of a domain's memory) names its rule there, by Xen's XSM dummy policy
(xen/include/xsm/dummy.h).  ``Access.permit`` applies it; ``named`` and ``own`` are its two common spellings.  A
refusal is one ChannelError naming the call, the domain and the port, with EPERM.
"""

from __future__ import annotations

import errno

from ..abi import (
    DOMID_SELF,
    ECS_FREE,
    ECS_RESERVED,
)
from ..engine import Chan
from ..errors import ChannelError, channel_error
from .domain import SimDomain
from .store import HostFile

# What the caller must be.  Xen's actions, and what each becomes here:
SELF = "self"  # no domain argument in Xen (current->domain): send, close, unmask, bind_*; a guest kernel's own acts
TARGET = "target"  # XSM_TARGET: the domain itself, or a privileged domain
PRIV = "priv"  # XSM_PRIV: the control domain only (the toolstack's domctls and sysctls)
DM_PRIV = "dm_priv"  # XSM_DM_PRIV: the domain's device model or the control domain (the simulator has no
#                      device-model stub domains, so: privileged)

RULES: dict[str, str] = {
    # EVTCHNOP_* that name a domain: xsm_evtchn_unbound, xsm_evtchn_status, xsm_evtchn_reset
    "allocate an unbound port in": TARGET,
    "get the status of": TARGET,
    "list the ports of": TARGET,
    "reset": TARGET,
    # privcmd's foreign mappings (xsm_map_gmfn_foreign, xsm_mmu_update): a dump reads what a mapping would
    "map frames of": TARGET,
    "read the event-channel memory of": TARGET,
    "get the domain info of": TARGET,
    # EVTCHNOP_* on the caller's own domain (no domain argument), and the guest kernel's own words and queues
    "bind interdomain for": SELF,
    "bind VIRQ for": SELF,
    "bind IPI for": SELF,
    "notify": SELF,
    "close": SELF,
    "unmask": SELF,
    "mask": SELF,
    "set the priority of": SELF,
    "move": SELF,
    "register the control block of": SELF,
    "expand the event array of": SELF,
    "consume events of": SELF,
    "make VCPUOP_up or VCPUOP_down for": SELF,  # vcpu_op() acts on current->domain's vCPUs
    # a guest's CPU hotplug: its own (echo 0 > .../cpuN/online), or the toolstack asking it (xl vcpu-set)
    "take down a vCPU of": TARGET,
    "bring up a vCPU of": TARGET,
    # the toolstack: XEN_DOMCTL_pausedomain/unpausedomain/destroydomain (xsm_domctl's default, XSM_PRIV); a PV
    # device's backend nodes and the builder's console/xenstore ports (libxl in dom0); debug keys (sysctl)
    "pause": PRIV,
    "unpause": PRIV,
    "destroy": PRIV,
    "add a device to": PRIV,
    "press debug key 'e' (every domain's channels)": PRIV,
    # a port Xen consumes for an ioreq server (XEN_DMOP_create_ioreq_server: xsm_dm_op, XSM_DM_PRIV)
    "allocate a Xen-consumed port in": DM_PRIV,
    # the host itself, which no domain of it may replace or mend (the simulator's stand-in for the machine's
    # administrator: its privileged domain 0)
    "create or replace the host": PRIV,
    "repair the host": PRIV,
    # xenstored's default permissions: a domain reads its own /local/domain/D subtree, dom0 every node
    "read the xenstore nodes of": TARGET,
}


def refusal(rule: str, caller: int, privileged: bool, domid: int | None) -> str | None:
    """Why ``caller`` may not make a call of ``rule`` naming ``domid`` (None: the host as a whole), or None."""
    if rule == SELF:
        return None if caller == domid else f"domain {caller} may not operate on another domain's ports"
    if privileged or (rule == TARGET and caller == domid):
        return None
    if rule == TARGET:
        return f"domain {caller} may not operate on another domain's ports"
    return f"domain {caller} is not privileged (only the toolstack's domain may)"


CONTROL_DOMAIN = 0  # the privileged domain of every host create_host makes (a host not yet made has no table)


def check_host_call(caller: int, privileged: bool, call: str) -> None:
    """A call about the host as a whole (no one domain): EPERM unless RULES lets ``caller`` make it."""
    why = refusal(RULES[call], caller, privileged, None)
    if why is not None:
        raise ChannelError(f"cannot {call}: {why} (EPERM)", errno=errno.EPERM, call=call)


def resolve_self(caller: int, domid: int) -> int:
    """DOMID_SELF names the calling domain."""
    return caller if domid == DOMID_SELF else domid


class Access:
    """The checks every hypercall and guest operation begins with, over the open file's domains."""

    def __init__(self, file: HostFile):
        self.file = file

    def domain(self, domid: int, call: str, port: int | None = None) -> SimDomain:
        file = self.file
        if not file.depth:  # (taking the lock checked it)
            file.check_size()
        dom = file.domains.get(domid)
        if dom is None:
            raise channel_error(call, errno.ESRCH, "no such domain", domain=domid, port=port)
        return dom

    def _caller(self, caller: int, domid: int, call: str, port: int | None = None) -> SimDomain:
        me = self.file.domains.get(caller)
        if me is None:
            raise channel_error(call, errno.ESRCH, f"the calling domain {caller} does not exist", domain=domid,
                                port=port)
        return me

    def permit(self, caller: int, domid: int, call: str, port: int | None = None,
               vcpu: int | None = None) -> SimDomain:
        """``call`` by ``caller`` naming ``domid``, as RULES says: the domain (ESRCH), the caller (ESRCH), then
        who may (EPERM).  Returns the domain.  A call missing from RULES is a bug: KeyError."""
        rule = RULES[call]
        dom = self.domain(domid, call, port)
        me = self._caller(caller, domid, call, port)
        why = refusal(rule, caller, me.privileged, domid)
        if why is not None:
            raise channel_error(call, errno.EPERM, why, domain=domid, port=port, vcpu=vcpu)
        return dom

    def permit_host(self, caller: int, call: str) -> None:
        """A call about the whole host (a debug key, a repair) by ``caller``, as RULES says."""
        check_host_call(caller, self._caller(caller, caller, call).privileged, call)

    def may(self, caller: int, domid: int, call: str) -> bool:
        """Whether ``permit`` would let the call through (for views that show only what the caller may see)."""
        me = self.file.domains.get(caller)
        return me is not None and refusal(RULES[call], caller, me.privileged, domid) is None

    def named(self, caller: int, domid: int, call: str, port: int | None = None) -> SimDomain:
        """An operation that names a domain (alloc_unbound, status, reset; privcmd's foreign mappings)."""
        return self.permit(caller, domid, call, port)

    def check_access(self, caller: int, domid: int, call: str) -> None:
        """Raise what ``call`` naming domain ``domid`` by ``caller`` would be refused with (EPERM, ESRCH)."""
        self.permit(caller, domid, call)

    def own(self, caller: int, domid: int, call: str, port: int | None = None, vcpu: int | None = None) -> SimDomain:
        """An operation on the caller's own domain only (RULES says SELF for each)."""
        return self.permit(caller, domid, call, port, vcpu)

    def chan(self, dom: SimDomain, port: int, call: str, bound: bool = True) -> Chan:
        """Xen's port_is_valid() (ports below valid_evtchns, port 0 included: it is reserved, reads closed),
        then, for ``bound``, a port in use (not free or reserved)."""
        nr = dom.mem.nr_chans
        if not 0 <= port < nr:
            raise channel_error(call, errno.EINVAL, f"port out of range (domain has ports 1..{nr - 1})",
                                domain=dom.domid, port=port)
        valid = dom.mem.valid_ports
        if port >= valid:
            raise channel_error(call, errno.EINVAL, f"port is not bound (Xen has channels for ports 1..{valid - 1} "
                                "of this domain so far)", domain=dom.domid, port=port)
        ch = self.file.rec(dom, port)
        if bound and ch.state in (ECS_FREE, ECS_RESERVED):
            raise channel_error(call, errno.EINVAL, "port is not bound" if port else "port 0 is reserved",
                                domain=dom.domid, port=port)
        return ch

    def vcpu(self, dom: SimDomain, vcpu: int, call: str, port: int | None = None) -> None:
        if not 0 <= vcpu < dom.mem.nr_vcpus:
            raise channel_error(call, errno.ENOENT, f"no vCPU {vcpu} (domain has {dom.mem.nr_vcpus})",
                                domain=dom.domid, port=port, vcpu=vcpu)
