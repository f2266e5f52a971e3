"""A new Child SA's install requests (UPDATE, ADD, its lineage's SPDADDs) for installs._send_install.

Built straight into their datagrams from the ChildSaUp (pipe.direct): every client of a burst makes
one install, and as values and messages (Selectors, Lifetimes, SaSpecs, a Policy, the messages, then
encode) they cost ~170k instructions more per client.  As messages still: a rekey responder's
(its outbound SaSpec waits on standby for a later ADD), and what one of the pipe's values would
refuse (none from the IKE engine), whose checks then say what is wrong, as they always did."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Action, Alg, Direction, MsgType, Policy, SaSpec, Selector, direct
from tunsec.ike.events import ChildSaUp
from tunsec.policy.selector import SelectorError, fast_selectors, selector_pairs
from tunsec.services.ike import install_failed
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

ALGS = {"aes128gcm16": Alg.AES128GCM16, "aes256gcm16": Alg.AES256GCM16}

Build = Callable[[int], pipe.Message | bytes]   # request id -> the request (WorkerClient.request_soon)
# update, add, the outbound SaSpec (messages only), the selectors of the lineage's SPDADDs (for _protect)
Built = tuple[Build, Build, SaSpec | None, Sequence[Selector] | Sequence[bytes]]

_IN, _OUT, _PROTECT = Direction.IN, Direction.OUT, Action.PROTECT
_T_UPDATE, _T_ADD, _T_SPDADD = MsgType.UPDATE, MsgType.ADD, MsgType.SPDADD


def build(self: IkeService, state: ChildState, ev: ChildSaUp, standby: bool) -> Built | None:
    """The install's UPDATE and ADD, and its SPDADDs' selectors; None if its selectors admit nothing
    (then it is deleted: install_failed.uninstallable).  ``standby``: a rekey we answered, its
    outbound SA held back (the SaSpec returned)."""
    wire = None if standby else _wire(state, ev)
    if wire is not None:
        in_body, out_body, outbound_sels = wire
        return (lambda r: direct.request(_T_UPDATE, r, in_body), lambda r: direct.request(_T_ADD, r, out_body),
                None, outbound_sels)
    specs = _specs(self, state, ev)
    if specs is None:
        return None
    inbound, outbound = specs
    return lambda r: pipe.Update(r, inbound), lambda r: pipe.Add(r, outbound), outbound, outbound.selectors


def spdadd(policy_id: int, priority: int, reqid: int, selector: Selector | bytes) -> Build:
    """The SPDADD of a lineage's PROTECT policy on selector (a SELECTOR extension of ``build``'s, or a
    Selector).  ValueError, as Policy's, if policy_id, priority or reqid is out of range or reqid 0."""
    if isinstance(selector, bytes):
        body = direct.spdadd(policy_id, priority, _PROTECT, reqid, selector)
        if body is None:
            raise ValueError(f"policy {policy_id}: id, priority {priority} or reqid {reqid} out of range")
        return lambda r: direct.request(_T_SPDADD, r, body)
    pol = Policy(id=policy_id, priority=priority, action=_PROTECT, reqid=reqid, selector=selector)
    return lambda r: pipe.SpdAdd(r, pol)


def _wire(state: ChildState, ev: ChildSaUp) -> tuple[bytes, bytes, list[bytes]] | None:
    """The UPDATE's and ADD's extensions and the outbound SELECTORs (the SPDADDs') as pipe.direct
    encodes them; None if a value would refuse one (_specs says which, or what else is wrong)."""
    try:
        pairs = selector_pairs(ev.local_ts, ev.remote_ts)
    except SelectorError:
        return None
    sels = direct.selectors(pairs)
    if sels is None:
        return None
    outbound_sels, inbound_sels = sels
    plan, alg, reqid, local, remote = state.plan, ALGS[ev.alg], state.reqid, state.local, state.remote
    soft, hard = plan.soft_limits(), plan.hard_limits()
    # a rekey we answer whose predecessor is gone (no standby): the worker tells us when the initiator
    # first sends on it, as _specs's
    in_body = direct.sa(ev.spi_in, _IN, alg, ev.key_in.reveal(), ev.esn, plan.replay_window, reqid, local, remote,
                        soft, hard, inbound_sels, not ev.initiator and state.pred is not None)
    out_body = direct.sa(ev.spi_out, _OUT, alg, ev.key_out.reveal(), ev.esn, 0, reqid, local, remote, soft, hard,
                         outbound_sels)
    if in_body is None or out_body is None:
        return None
    return in_body, out_body, outbound_sels


def _specs(self: IkeService, state: ChildState, ev: ChildSaUp) -> tuple[SaSpec, SaSpec] | None:
    """The Child SA's inbound and outbound SaSpec; None if its selectors admit nothing (it is deleted)."""
    plan = state.plan
    try:
        sels = fast_selectors(ev.local_ts, ev.remote_ts)
    except SelectorError as err:   # the engine refuses such children; never install one that admits nothing
        install_failed.uninstallable(self, state, f"{ev.spi_in:08x}_i {ev.spi_out:08x}_o failed: {err}")
        return None
    common = dict(alg=ALGS[ev.alg], esn=ev.esn, reqid=state.reqid, local=state.local, remote=state.remote,
                  soft=plan.soft_lifetime(), hard=plan.hard_lifetime())
    # a rekey we answer: the worker tells us when the initiator first sends on it (see first_use)
    inbound = SaSpec(spi=ev.spi_in, direction=_IN, key=ev.key_in.reveal(),
                     replay_window=plan.replay_window, selectors=sels.inbound,
                     report_first_use=not ev.initiator and state.pred is not None,
                     **common)  # type: ignore[arg-type]
    outbound = SaSpec(spi=ev.spi_out, direction=_OUT, key=ev.key_out.reveal(), replay_window=0,
                      selectors=sels.outbound, **common)  # type: ignore[arg-type]
    return inbound, outbound
