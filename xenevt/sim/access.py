"""Who may make a call, and the lookups every call starts with: domain, port, vCPU, each checked.

Xen's hypercalls that name a domain follow XSM's default policy (the caller
or a privileged domain); the rest act on the caller's own domain only.  A
refusal is one ChannelError naming the call, the domain and the port.
"""

from __future__ import annotations

import errno

from ..abi import (
    DOMID_SELF,
    ECS_FREE,
    ECS_RESERVED,
)
from ..engine import Chan
from ..errors import channel_error
from .store import SimDomain


class Access:
    """The checks every hypercall and guest operation of SimHost begins with."""

    def domain(self, domid: int, call: str, port: int | None = None) -> SimDomain:
        if not self._depth:  # (taking the lock checked it)
            self._check_size()
        dom = self.domains.get(domid)
        if dom is None:
            raise channel_error(call, errno.ESRCH, "no such domain", domain=domid, port=port)
        return dom

    @staticmethod
    def _self(caller: int, domid: int) -> int:
        """DOMID_SELF names the calling domain."""
        return caller if domid == DOMID_SELF else domid

    def _caller(self, caller: int, domid: int, call: str, port: int | None = None) -> SimDomain:
        me = self.domains.get(caller)
        if me is None:
            raise channel_error(call, errno.ESRCH, f"the calling domain {caller} does not exist", domain=domid,
                                port=port)
        return me

    def _access(self, caller: int, domid: int, call: str, port: int | None = None) -> SimDomain:
        """An operation that names a domain (alloc_unbound, status, reset; privcmd's foreign mappings): the
        caller must be that domain or privileged (XSM_TARGET: xsm_evtchn_unbound/_status/_reset)."""
        dom = self.domain(domid, call, port)
        me = self._caller(caller, domid, call, port)
        if caller != domid and not me.privileged:
            raise channel_error(call, errno.EPERM, f"domain {caller} may not operate on another domain's ports",
                                domain=domid, port=port)
        return dom

    def check_access(self, caller: int, domid: int, call: str) -> None:
        """Raise what ``call`` naming domain ``domid`` by ``caller`` would be refused with (EPERM, ESRCH)."""
        self._access(caller, domid, call)

    def _own(self, caller: int, domid: int, call: str, port: int | None = None, vcpu: int | None = None) -> SimDomain:
        """An operation on the caller's own domain only, privileged or not: Xen's send, close, unmask,
        bind_vcpu, set_priority and bind_* take no domain (current->domain), and only the guest's own kernel
        masks its words or consumes its queues."""
        dom = self.domain(domid, call, port)
        self._caller(caller, domid, call, port)
        if caller != domid:
            raise channel_error(call, errno.EPERM, f"domain {caller} may not operate on another domain's ports",
                                domain=domid, port=port, vcpu=vcpu)
        return dom

    def _chan(self, dom: SimDomain, port: int, call: str, bound: bool = True) -> Chan:
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
        ch = self._rec(dom, port)
        if bound and ch.state in (ECS_FREE, ECS_RESERVED):
            raise channel_error(call, errno.EINVAL, "port is not bound" if port else "port 0 is reserved",
                                domain=dom.domid, port=port)
        return ch

    def _vcpu(self, dom: SimDomain, vcpu: int, call: str, port: int | None = None) -> None:
        if not 0 <= vcpu < dom.mem.nr_vcpus:
            raise channel_error(call, errno.ENOENT, f"no vCPU {vcpu} (domain has {dom.mem.nr_vcpus})",
                                domain=dom.domid, port=port, vcpu=vcpu)
