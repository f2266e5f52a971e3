"""RADIUS Dynamic Authorization (tunsec.radius.dae): which datagrams are acted on (source,
authenticators, replays), which sessions a request names, and the answer's code, Error-Cause
and authenticators as a Dynamic Authorization Client (pyrad's CoAPacket) checks them. Packets
are built and read with pyrad, as a RADIUS server would send them; no socket (the e2e test in
tests/interop/test_strongswan_radius_dae.py has FreeRADIUS's radclient on a real one)."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from pyrad import packet as rp

from tunsec.ike.secret import Secret
from tunsec.radius.dae import MAX_AHEAD, REPLAY_WINDOW, DaeServer, SessionQuery
from tunsec.radius.messages import DICTIONARY, Station
from tunsec.radius.settings import DaeSettings

SECRET = b"dae-secret-7"
CLIENT = ("192.0.2.5", 40000)
NOW = 1_800_000_000.0

# the sessions the gateway has: handle -> (EAP identity, Acct-Session-Id, virtual IP)
SESSIONS = {1: ("alice", "1800000000-1", "10.3.0.1"), 2: ("bob", "1800000000-2", "10.3.0.2"),
            3: ("alice", "1800000000-3", "10.3.0.3")}


def station(handle: int) -> Station:
    """What accounting sent for a session: bob's and alice's second behind one NAT (198.51.100.2, ports 4500, 4501)."""
    return Station("gw-1", "192.0.2.1", "192.0.2.1[4500]", f"198.51.100.{min(handle, 2)}[{4500 + handle // 3}]",
                   0xC0000000 + handle, "rw")


STARTED_AGO = 3600.0


class Gateway:
    def __init__(self, require_event_timestamp: bool = True) -> None:
        self.closed: list[Hashable] = []
        self.clock = NOW - STARTED_AGO   # the listener started an hour before the tests' requests
        self.mono = 100.0 - STARTED_AGO   # both clocks run (revdae F1 anchors the start on the monotonic one)
        settings = DaeSettings(ipaddress.ip_address("192.0.2.1"), Secret(SECRET),
                               clients=(ipaddress.ip_network("192.0.2.0/28"),),
                               require_event_timestamp=require_event_timestamp)
        self.server = DaeServer(settings, "gw-1", self.find, self.disconnect, self.ours,
                                clock=lambda: self.clock, monotonic=lambda: self.mono)
        self.clock, self.mono = NOW, 100.0

    @staticmethod
    def ours(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return addr in (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1"))

    @staticmethod
    def find(query: SessionQuery) -> list[Hashable]:
        return [h for h, (user, sid, vip) in SESSIONS.items()
                if (not query.users or user in query.users) and (not query.session_ids or sid in query.session_ids)
                and (not query.vips or ipaddress.ip_address(vip) in query.vips) and query.station_matches(station(h))]

    def disconnect(self, handles: Sequence[Hashable]) -> None:
        self.closed += handles


def request(code: int = rp.DisconnectRequest, secret: bytes = SECRET, ident: int = 7, ma: bool = False,
            stamped: bool = True, **attrs: Any) -> tuple[Any, bytes]:
    """A request as a DAC sends it: stamped NOW (the gateway's clock in the tests) unless ``stamped``
    is false or ``attrs`` has an Event_Timestamp."""
    pkt = rp.CoAPacket(code=code, id=ident, secret=secret, dict=DICTIONARY)
    if ma:
        pkt.add_message_authenticator()
    if stamped:
        attrs.setdefault("Event_Timestamp", int(NOW))
    for name, value in attrs.items():
        pkt.AddAttribute(name.replace("_", "-"), value)
    return pkt, pkt.RequestPacket()


def check(req: Any, raw: bytes | None) -> tuple[int, int | None]:
    """The answer's code and Error-Cause, once it verifies as the DAC verifies it."""
    assert raw is not None
    reply = rp.CoAPacket(packet=raw, secret=SECRET, dict=DICTIONARY)
    assert req.VerifyReply(reply, raw, enforce_ma=True), "the answer does not verify"
    causes = reply.get(101)   # Error-Cause
    return reply.code, int.from_bytes(causes[0], "big") if causes else None


@pytest.fixture
def gw() -> Gateway:
    return Gateway()


def test_a_disconnect_for_a_user_closes_all_of_its_sessions_and_is_acked(gw: Gateway) -> None:
    req, raw = request(User_Name="alice")
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    assert gw.closed == [1, 3]
    stats = gw.server.stats
    assert (stats.requests, stats.disconnect_acks, stats.sessions_closed) == (1, 1, 2)


def test_user_name_and_session_id_together_name_one_session(gw: Gateway) -> None:
    req, raw = request(User_Name="alice", Acct_Session_Id="1800000000-3", ma=True)
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    assert gw.closed == [3]


def test_a_virtual_ip_names_the_session_it_was_leased_to(gw: Gateway) -> None:
    req, raw = request(Framed_IP_Address="10.3.0.3")
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    req, raw = request(ident=8, User_Name="bob", Framed_IP_Address="10.3.0.3")   # not bob's
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectNAK, 503)
    assert gw.closed == [3]


def with_raw_attribute(extra: bytes) -> tuple[Any, bytes]:
    """alice's Disconnect-Request with ``extra`` (an encoded attribute pyrad would refuse) appended."""
    _, raw = request(User_Name="alice")
    attrs = raw[20:] + extra
    header = bytes([rp.DisconnectRequest, 9]) + (20 + len(attrs)).to_bytes(2, "big")
    raw = header + hashlib.md5(header + bytes(16) + attrs + SECRET).digest() + attrs
    return rp.CoAPacket(packet=raw, secret=SECRET, dict=DICTIONARY), raw


@pytest.mark.parametrize("extra", [bytes([8, 4, 10, 3]), bytes([5, 4, 0, 1])])   # Framed-IP-Address, NAS-Port
def test_an_address_or_nas_port_of_the_wrong_length_is_an_invalid_attribute(gw: Gateway, extra: bytes) -> None:
    req, raw = with_raw_attribute(extra)   # 2 bytes
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectNAK, 407)   # Invalid-Attribute-Value
    assert gw.closed == []


def test_a_disconnect_matching_nothing_gets_a_nak_with_session_context_not_found(gw: Gateway) -> None:
    for attrs in ({"User_Name": "mallory"}, {"User_Name": "bob", "Acct_Session_Id": "1800000000-1"}):
        req, raw = request(**attrs)
        assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectNAK, 503)
        gw.mono += 1
    assert gw.closed == []
    assert gw.server.stats.disconnect_naks == 2


@pytest.mark.parametrize(("attrs", "cause"), [
    ({}, 402),                                                      # Missing-Attribute: names no session
    ({"User_Name": "alice", "NAS_Identifier": "other-gw"}, 403),    # NAS-Identification-Mismatch
    ({"User_Name": "alice", "NAS_IP_Address": "192.0.2.9"}, 403),
    ({"User_Name": "alice", "NAS_IPv6_Address": "2001:db8::9"}, 403),
    # station attributes that are no session's (alice's are 198.51.100.1/2, NAS-Port 0xc0000001/3)
    ({"User_Name": "alice", "Calling_Station_Id": "198.51.100.2[4500]"}, 503),
    ({"User_Name": "alice", "NAS_Port": 1234}, 503),
    ({"Called_Station_Id": "192.0.2.1[500]"}, 503),
])
def test_requests_the_gateway_cannot_honour_exactly_get_a_nak_and_close_nothing(
        gw: Gateway, attrs: dict[str, str], cause: int) -> None:
    req, raw = request(**attrs)
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectNAK, cause)
    assert gw.closed == []


@pytest.mark.parametrize("extra", [bytes([50, 5]) + b"m-1", bytes([89, 7]) + b"cui-1"])
def test_a_session_attribute_the_gateway_does_not_match_gets_unsupported_attribute(gw: Gateway, extra: bytes) -> None:
    """Acct-Multi-Session-Id, Chargeable-User-Identity: a narrower match than User-Name alone;
    ignoring it would close more sessions than asked."""
    req, raw = with_raw_attribute(extra)
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectNAK, 401)
    assert gw.closed == []


@pytest.mark.parametrize(("attrs", "closed"), [
    ({"Calling_Station_Id": "198.51.100.2[4501]"}, [3]),   # alice's second session, behind bob's NAT
    ({"User_Name": "alice", "Calling_Station_Id": "198.51.100.1[4500]"}, [1]),
    ({"NAS_Port": 0xC0000002}, [2]),
    ({"User_Name": "alice", "NAS_Port_Id": "rw", "Called_Station_Id": "192.0.2.1[4500]"}, [1, 3]),
    # several values of one attribute: any of them
    ({"Calling_Station_Id": ["198.51.100.1[4500]", "198.51.100.2[4500]"]}, [1, 2]),
])
def test_the_station_attributes_accounting_sent_name_sessions(
        gw: Gateway, attrs: dict[str, Any], closed: list[int]) -> None:
    """A server copies NAS-Port, NAS-Port-Id, Called- and Calling-Station-Id from the session's
    Start: each narrows the match, exactly as accounting wrote it."""
    req, raw = request(**attrs)
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    assert gw.closed == closed


def test_our_own_nas_identifier_and_addresses_are_fine(gw: Gateway) -> None:
    req, raw = request(User_Name="bob", NAS_Identifier="gw-1", NAS_IP_Address="192.0.2.1",
                       NAS_IPv6_Address="2001:db8::1", NAS_Port_Type="Virtual")
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    assert gw.closed == [2]


def test_a_nas_port_type_other_than_virtual_names_no_session(gw: Gateway) -> None:
    req, raw = request(User_Name="bob", NAS_Port_Type=15)   # Ethernet
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectNAK, 503)
    assert gw.closed == []


def test_a_coa_request_gets_a_coa_nak_and_changes_nothing(gw: Gateway) -> None:
    req, raw = request(rp.CoARequest, User_Name="alice", Session_Timeout=60)
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.CoANAK, 406)   # Unsupported-Extension
    req, raw = request(rp.CoARequest, ident=8, User_Name="mallory")
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.CoANAK, 503)
    assert gw.closed == [] and gw.server.stats.coa_naks == 2


def test_a_wrong_secret_or_a_forged_message_authenticator_is_dropped_and_counted(
        gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "tunsec.radius")
    _, raw = request(secret=b"guessed", User_Name="alice")
    assert gw.server.receive(raw, CLIENT) is None
    # the Request Authenticator recomputed over a changed Message-Authenticator: only it is wrong
    _, raw = request(ma=True, User_Name="alice")
    at = raw.index(bytes([80, 18])) + 2
    attrs = raw[20:at] + bytes(16) + raw[at + 16:]
    raw = raw[:4] + hashlib.md5(raw[:4] + bytes(16) + attrs + SECRET).digest() + attrs
    assert gw.server.receive(raw, CLIENT) is None
    # a truncated packet
    assert gw.server.receive(raw[:12], CLIENT) is None
    assert gw.closed == [] and gw.server.stats.bad == 3 and gw.server.stats.requests == 0
    assert SECRET.decode() not in caplog.text and "guessed" not in caplog.text
    assert "does not verify" in caplog.text


def test_a_request_from_an_address_not_in_clients_is_dropped_even_with_the_secret(gw: Gateway) -> None:
    _, raw = request(User_Name="alice")
    assert gw.server.receive(raw, ("192.0.2.99", 40000)) is None
    assert gw.server.receive(raw, ("2001:db8::5", 40000)) is None
    assert gw.closed == [] and gw.server.stats.unknown_client == 2


def test_an_access_request_sent_to_the_dae_port_is_dropped_as_unsupported(gw: Gateway) -> None:
    pkt = rp.AuthPacket(code=rp.AccessRequest, id=1, secret=SECRET, dict=DICTIONARY)
    pkt.AddAttribute("User-Name", "alice")
    assert gw.server.receive(pkt.RequestPacket(), CLIENT) is None
    assert gw.closed == [] and gw.server.stats.unsupported == 1


def test_a_retransmission_gets_the_same_answer_and_is_not_acted_on_again(gw: Gateway) -> None:
    req, raw = request(User_Name="alice")
    first = gw.server.receive(raw, CLIENT)
    gw.mono += 5
    again = gw.server.receive(raw, CLIENT)
    assert first == again and check(req, again) == (rp.DisconnectACK, None)
    assert gw.closed == [1, 3]   # once
    assert (gw.server.stats.requests, gw.server.stats.duplicates) == (1, 1)


def test_a_request_replayed_from_another_client_is_dropped(gw: Gateway) -> None:
    _, raw = request(User_Name="alice")
    assert gw.server.receive(raw, CLIENT) is not None
    assert gw.server.receive(raw, ("192.0.2.6", 40000)) is None
    assert gw.closed == [1, 3] and gw.server.stats.replayed == 1


def test_a_stale_event_timestamp_is_dropped_as_a_replay_a_current_one_is_taken(gw: Gateway) -> None:
    _, raw = request(User_Name="alice", Event_Timestamp=int(NOW) - 3600)
    assert gw.server.receive(raw, CLIENT) is None
    _, raw = request(User_Name="alice", ident=9, Event_Timestamp=int(NOW) + 3600)   # from the future
    assert gw.server.receive(raw, CLIENT) is None
    assert gw.closed == [] and gw.server.stats.replayed == 2
    req, raw = request(User_Name="bob", ident=10, Event_Timestamp=int(NOW) - 20)
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    assert gw.closed == [2]


def test_a_request_after_the_replay_window_is_taken_again() -> None:
    """Without Event-Timestamp (require_event_timestamp = no) the cache is the only replay check: it
    keeps answers REPLAY_WINDOW (+ MAX_AHEAD) seconds, then the same request is a new one (a DAC may
    well repeat a Disconnect; and so may an eavesdropper)."""
    gw = Gateway(require_event_timestamp=False)
    _, raw = request(User_Name="bob", stamped=False)
    gw.server.receive(raw, CLIENT)
    gw.mono += REPLAY_WINDOW + MAX_AHEAD + 1
    gw.server.receive(raw, CLIENT)
    assert gw.closed == [2, 2] and gw.server.stats.duplicates == 0


EAVESDROPPER = ("192.0.2.5", 40001)   # the DAC's address (clients admits it), another port


def test_a_request_stamped_far_ahead_of_our_clock_is_dropped(gw: Gateway) -> None:
    """240 s ahead would pass the Event-Timestamp check for 540 s, longer than any answer is kept."""
    _, raw = request(User_Name="alice", Event_Timestamp=int(gw.clock) + 240)
    assert gw.server.receive(raw, CLIENT) is None
    assert gw.closed == [] and gw.server.stats.replayed == 1


def test_an_answer_is_kept_as_long_as_its_event_timestamp_passes(gw: Gateway) -> None:
    """Stamped as far ahead as allowed: acted on once; replayed just before its timestamp is too old,
    the cache still knows it; after that, the timestamp refuses it."""
    req, raw = request(User_Name="alice", Event_Timestamp=int(gw.clock + MAX_AHEAD))
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    gw.closed.clear()
    gw.clock += REPLAY_WINDOW + MAX_AHEAD - 1
    gw.mono += REPLAY_WINDOW + MAX_AHEAD - 1
    assert gw.server.receive(raw, EAVESDROPPER) is None
    assert gw.closed == [] and gw.server.stats.replayed == 1
    gw.clock += 2
    gw.mono += 2
    assert gw.server.receive(raw, EAVESDROPPER) is None
    assert gw.closed == [] and gw.server.stats.replayed == 2


def test_a_request_stamped_before_or_in_the_second_the_listener_started_is_dropped_as_a_replay(
        caplog: pytest.LogCaptureFixture) -> None:
    """A restart starts with an empty answer cache: a request captured in the window before it, replayed
    after it, still has a timestamp the window admits (it named a session of before the restart, and by
    User-Name may close the user's new one). Stamped before the listener started, it is refused; and
    stamped in the second it started (Event-Timestamp has whole seconds: it may have been sent to the
    old process in that second), with its retransmissions; one stamped in the next second is taken."""
    gw = Gateway()
    gw.clock, gw.mono = NOW + 0.5, gw.mono + 0.5
    gw.server = DaeServer(gw.server.settings, "gw-1", gw.find, gw.disconnect, gw.ours,
                          clock=lambda: gw.clock, monotonic=lambda: gw.mono)   # restarted at NOW + 0.5
    gw.clock, gw.mono = NOW + 30, gw.mono + 29.5
    _, raw = request(User_Name="alice", Event_Timestamp=int(NOW) - 20)   # captured before the restart
    assert gw.server.receive(raw, EAVESDROPPER) is None
    _, raw = request(User_Name="alice", ident=9, Event_Timestamp=int(NOW))   # captured in the start second
    assert gw.server.receive(raw, EAVESDROPPER) is None
    assert gw.server.receive(raw, CLIENT) is None   # from the DAC's own port too: nothing tells them apart
    assert gw.closed == [] and gw.server.stats.replayed == 3 and gw.server.stats.requests == 0
    req, raw = request(User_Name="bob", ident=10, Event_Timestamp=int(NOW) + 1)
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    assert gw.closed == [2]
    refusals = [r.getMessage() for r in caplog.records if "second it started" in r.getMessage()]
    assert len(refusals) == 3 and "192.0.2.5:40001" in refusals[0], refusals
    assert all(SECRET.decode() not in r.getMessage() for r in caplog.records)


def test_a_request_without_event_timestamp_gets_a_missing_attribute_nak_and_closes_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    """require_event_timestamp (the default): the answer cache would be its only replay check, and it
    forgets. Every copy gets the same NAK 402, counted and logged with its source; none is acted on."""
    gw = Gateway()
    req, raw = request(User_Name="alice", stamped=False)
    first = gw.server.receive(raw, CLIENT)
    assert check(req, first) == (rp.DisconnectNAK, 402)
    assert gw.server.receive(raw, EAVESDROPPER) == first   # a replay: the same NAK, nothing closed
    req, raw = request(rp.CoARequest, User_Name="alice", stamped=False)
    reply = gw.server.receive(raw, CLIENT)
    assert reply is not None and rp.CoAPacket(packet=reply, secret=SECRET, dict=DICTIONARY).code == rp.CoANAK
    req, raw = request(User_Name="alice", ident=8, stamped=False)
    raw = raw[:2] + (len(raw) + 5).to_bytes(2, "big") + raw[4:] + bytes([55, 5, 1, 2, 3])
    req.authenticator = hashlib.md5(raw[:4] + bytes(16) + raw[20:] + SECRET).digest()   # re-signed: 3 bytes long
    raw = raw[:4] + req.authenticator + raw[20:]
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectNAK, 407)
    stats = gw.server.stats
    assert gw.closed == [] and (stats.unstamped, stats.requests, stats.disconnect_naks, stats.bad) == (4, 0, 0, 0)
    lines = [r.getMessage() for r in caplog.records if "without Event-Timestamp" in r.getMessage()]
    assert len(lines) == 3 and "192.0.2.5:40000" in lines[0] and "192.0.2.5:40001" in lines[1], lines
    assert all(SECRET.decode() not in r.getMessage() for r in caplog.records)


def test_without_require_event_timestamp_an_unstamped_request_is_taken() -> None:
    gw = Gateway(require_event_timestamp=False)
    req, raw = request(User_Name="bob", stamped=False)
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    assert gw.closed == [2] and gw.server.stats.unstamped == 0


def test_a_reload_keeps_when_the_first_listener_started() -> None:
    """A listener a reload re-creates with the same secret (and so the answers) keeps the first one's start."""
    old = Gateway()
    new = Gateway()
    new.clock += 60
    new.mono += 60
    new.server = DaeServer(new.server.settings, "gw-1", new.find, new.disconnect, new.ours,
                           clock=lambda: new.clock, monotonic=lambda: new.mono)   # made by a reload, a minute on
    new.server.adopt(old.server)
    req, raw = request(User_Name="bob", Event_Timestamp=int(NOW) - 20)   # after the first start, before the reload
    assert check(req, new.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)


def test_a_listener_a_reload_recreates_with_the_same_secret_knows_what_the_old_one_answered() -> None:
    old = Gateway()
    req, raw = request(User_Name="alice", Event_Timestamp=int(old.clock))
    assert check(req, old.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    new = Gateway()   # other clients, say: the same secret
    new.clock, new.mono = old.clock + 60, old.mono + 60
    new.server.adopt(old.server)
    assert new.server.receive(raw, EAVESDROPPER) is None
    assert new.closed == [] and new.server.stats.replayed == 1
    assert new.server.receive(raw, CLIENT) == old.server.receive(raw, CLIENT)   # a retransmission: answered again
    other = Gateway()
    other.server.settings = dataclasses.replace(other.server.settings, secret=Secret(b"another secret"))
    other.server.adopt(old.server)   # another secret: nothing it answered verifies here
    assert not other.server._answered


def test_proxy_state_comes_back_in_the_answer(gw: Gateway) -> None:
    _, raw = request(User_Name="mallory", Proxy_State=b"hop-1")
    answer = gw.server.receive(raw, CLIENT)
    assert answer is not None
    assert rp.CoAPacket(packet=answer, secret=SECRET, dict=DICTIONARY).get(33) == [b"hop-1"]


# EAP identities of the sessions IdentityGateway has, by handle
PEERS = {1: b"alice", 2: "jürgen".encode(), 3: "jürgen".encode("latin-1")}


class IdentityGateway(Gateway):
    """Sessions named by their peers' EAP identities, matched by the IKE service's own matcher."""

    @staticmethod
    def find(query: SessionQuery) -> list[Hashable]:
        from tunsec.ike.identity import Identity
        from tunsec.services.ike.radius_edge import _names
        return [h for h, name in PEERS.items() if not query.users or _names(Identity.of_user(name), query.users)]


@pytest.mark.parametrize(("user", "closed"), [("jürgen".encode("latin-1"), [3]), ("jürgen".encode(), [2]),
                                              (b"J\xdcRGEN", []), (b"\xff\xfe", [])])
def test_a_user_name_that_is_not_utf8_is_matched_as_its_bytes(user: bytes, closed: list[int]) -> None:
    gw = IdentityGateway()
    req, raw = request(User_Name=user)   # a RADIUS string is any octets (RFC 8044 §3.5)
    assert check(req, gw.server.receive(raw, CLIENT)) == \
        ((rp.DisconnectACK, None) if closed else (rp.DisconnectNAK, 503))
    assert gw.closed == closed and gw.server.stats.bad == 0


class BrokenGateway(Gateway):
    @staticmethod
    def find(query: SessionQuery) -> list[Hashable]:
        raise RuntimeError("a bug in the session matcher")


def test_a_decision_that_fails_is_answered_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tunsec.radius")
    gw = BrokenGateway()
    req, raw = request(User_Name="alice")
    answer = gw.server.receive(raw, CLIENT)
    assert check(req, answer) == (rp.DisconnectNAK, 506)   # Resources-Unavailable: the NAS's failure
    assert gw.server.receive(raw, CLIENT) == answer        # a retransmission: the same answer, not decided again
    coa, raw = request(rp.CoARequest, ident=8, User_Name="bob")
    assert check(coa, gw.server.receive(raw, CLIENT)) == (rp.CoANAK, 506)
    stats = gw.server.stats
    assert (stats.requests, stats.bad, stats.duplicates, stats.disconnect_naks, stats.coa_naks) == (2, 2, 1, 1, 1)
    assert gw.closed == []
    failed = [r for r in caplog.records if "cannot be decided" in r.getMessage()]
    assert len(failed) == 2 and all(r.levelno == logging.ERROR and r.exc_info is None for r in failed)
    assert "RuntimeError: a bug in the session matcher" in failed[0].getMessage()


def test_a_shorter_window_refuses_older_timestamps_and_keeps_answers_as_long_as_they_pass() -> None:
    gw = Gateway()
    gw.server.settings = dataclasses.replace(gw.server.settings, window=60.0)   # radius.dae.window = 1m
    _, raw = request(User_Name="alice", Event_Timestamp=int(gw.clock) - 61)
    assert gw.server.receive(raw, CLIENT) is None and gw.server.stats.replayed == 1
    req, raw = request(User_Name="bob", ident=8, Event_Timestamp=int(gw.clock))
    assert check(req, gw.server.receive(raw, CLIENT)) == (rp.DisconnectACK, None)
    gw.clock += 60
    gw.mono += 60
    assert gw.server.receive(raw, EAVESDROPPER) is None   # still cached: its timestamp still passes
    gw.clock += 1 + MAX_AHEAD
    gw.mono += 1 + MAX_AHEAD
    assert gw.server.receive(raw, EAVESDROPPER) is None   # forgotten, and now too old
    assert gw.closed == [2] and gw.server.stats.replayed == 3 and not gw.server._answered
