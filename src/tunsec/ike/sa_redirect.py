"""Redirect of an IKE SA (RFC 5685; the notify codec and limits are ``redirect.py``).

An initiator redirected in IKE_SA_INIT to an FQDN waits for its address (``ResolveGateway``,
answered by :meth:`IkeSa.gateway_resolved`, bounded by RESOLVE_TIMEOUT); one redirected in
IKE_AUTH starts a new IKE SA at the named gateway, unless that would be a redirect loop.

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .events import DownReason, NegotiationFailed, Redirected, ResolveGateway
from .redirect import MAX_REDIRECTS, REDIRECT_PERIOD, RESOLVE_TIMEOUT, Redirect
from .spi_tag import make_ike_spi

if TYPE_CHECKING:
    from .sa import IkeSa

log = logging.getLogger(__name__)


def await_address(self: IkeSa) -> None:
    st = self._st
    assert st.resolving is not None
    self._resolve_deadline = self._now + RESOLVE_TIMEOUT
    st.emit(ResolveGateway(self.name, st.resolving))


def resolve_failed(self: IkeSa, why: str) -> None:
    self._st.emit(NegotiationFailed(self.name, "REDIRECT", why))
    self._st.resolving, self._resolve_deadline = None, None
    self._close(DownReason.NEGOTIATION_FAILED)


def target_authenticated(sa: IkeSa) -> bool:
    """sa (an initiator) goes to the gateway a REDIRECT in IKE_AUTH named (authenticated), not one in
    IKE_SA_INIT since (services/ike/exclude_trust.py)."""
    return sa._st.authenticated_target


def follow_auth_redirect(self: IkeSa, redirect: Redirect) -> None:
    """Start a new IKE SA at the gateway the IKE_AUTH response named (RFC 5685 §6), unless
    that makes more than MAX_REDIRECTS within REDIRECT_PERIOD (a loop between gateways)."""
    from .sa import IkeSa  # here: sa.py imports this module

    st, now = self._st, self._now
    history = (*(t for t in self._redirect_history if now - t < REDIRECT_PERIOD), now)
    if len(history) > MAX_REDIRECTS:
        st.emit(NegotiationFailed(self.name, "REDIRECT", f"redirected more than {MAX_REDIRECTS} times within "
                                  f"{REDIRECT_PERIOD:.0f} s, last to {redirect.gateway}: not followed"))
        return
    old = st.remote_addr[0]
    st.emit(Redirected(self.name, old, redirect.gateway, in_auth=True))
    remote = st.remote_addr if redirect.fqdn else (redirect.gateway, st.config.remote_port)
    new = IkeSa(
        st.config,
        True,
        now,
        st.rng,
        spi_allocator=st.spi_allocator,
        spi_tag=st.spi_tag,
        spi_book=st.spi_book,
        remote_addr=remote,
        local_addr=None,  # as a fresh initiation: from local_port, the address the route picks
        wall_clock=st.wall_clock,
        jitter=st.jitter,
        fragment_stats=self._frag_stats,
        drop_stats=self._drops,
        address_role=st.address_role,
    )
    if st.spi_book is not None:   # its SPI is routed once this SA hands it on: none another SA has or reserved
        new._st.spi_i = st.spi_book.reserve(st.local_spi, lambda: make_ike_spi(st.rng, st.spi_tag, remote[0]))
    new._redirect_history = history
    new._st.redirected_from = old
    new._st.authenticated_target = True
    if redirect.fqdn:
        new._st.resolving = redirect.gateway
        new._await_address()
    new.initiate(st.auth_redirect_child)
    self._successor = new  # the endpoint routes its SPI (it is no heir: nothing is shared)
