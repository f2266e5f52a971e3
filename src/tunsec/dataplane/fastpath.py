"""Typed wrapper over the C fast path (csrc/, built by cffi as _fastpath).

Python calls in here per SA or policy change, never per packet: the packet
loop (Dataplane.run) is one long C call that releases the GIL.  The single
packet methods (outbound/inbound) exist for tests, fuzzing and benchmarks.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from tunsec.dataplane._fastpath import ffi, lib
from tunsec.dataplane.pipe import (
    Action,
    Alg,
    Direction,
    Endpoint,
    Errno,
    IPAddress,
    Policy,
    PolicyInfo,
    SaInfo,
    SaSpec,
    SaState,
    Selector,
)
from tunsec.dataplane.pipe.encoding import _pack_addr
from tunsec.dataplane.pipe.fields import _addr_or_none
from tunsec.dataplane.pipe.quick import SaFields, SpdAddFields
from tunsec.dataplane.pipe.values import quick_init

MAX_PACKET: int = lib.TS_MAX_PACKET
VNET_HDR_LEN: int = lib.TS_VNET_HDR_LEN


def _c_enum(ctype: str, prefix: str) -> dict[str, int]:
    """The members of a C enum as cffi read them from csrc/tunsec_dp.h, prefix and __COUNT dropped."""
    members: dict[str, int] = ffi.typeof(ctype).relements
    return {name.removeprefix(prefix): value for name, value in members.items() if not name.endswith("__COUNT")}


# Why a packet was not forwarded: enum ts_drop, read from the C header at import, so a new
# reason is one line there (plus the code that counts it).  Its lower-case name is what DUMP
# carries and `tunsec status` prints (TS_DROP_ICMP_SUPPRESSED counts ICMP answers withheld,
# not packets).  mypy cannot see members built at run time; no Python code names one.
_DROPS = sorted(_c_enum("enum ts_drop", "TS_DROP_").items(), key=lambda kv: kv[1])
Drop = IntEnum("Drop", _DROPS)  # type: ignore[misc]

# The per-SA counters: enum ts_sa_counter, the index of ts_sa_info.counters[], read the same
# way, so a new counter is one line in the header (plus the code that counts it).  DUMP carries
# them by these names (pipe.SaInfo.counters); `tunsec status` and the metrics iterate over them.
SA_COUNTERS: tuple[str, ...] = tuple(
    name.lower() for name, _ in sorted(_c_enum("enum ts_sa_counter", "TS_CTR_").items(), key=lambda kv: kv[1])
)


# enum ts_event_type: the values come from the header, the members are written out because
# the worker names them (mypy cannot see members built at run time); tests/dataplane/
# test_c_interface.py fails when the header has an event this class lacks
class EventType(IntEnum):
    ACQUIRE = lib.TS_EV_ACQUIRE
    EXPIRE = lib.TS_EV_EXPIRE
    INVALID_SPI = lib.TS_EV_INVALID_SPI
    IKE = lib.TS_EV_IKE
    RESERVE = lib.TS_EV_RESERVE
    FIRST_USE = lib.TS_EV_FIRST_USE


_ERRNO = {
    lib.TS_EINVAL: Errno.EINVAL,
    lib.TS_EEXIST: Errno.EEXIST,
    lib.TS_ENOENT: Errno.ENOENT,
    lib.TS_ENOSPC: Errno.ENOSPC,
    lib.TS_ESTATE: Errno.ESTATE,
    lib.TS_ENOMEM: Errno.ENOMEM,
    lib.TS_ECRYPTO: Errno.EINVAL,
    lib.TS_EIO: Errno.EIO,
}


class DataplaneError(Exception):
    """A fast-path call refused; .errno is the pipe's error code for it."""

    def __init__(self, op: str, rc: int) -> None:
        self.errno = _ERRNO.get(rc, Errno.EINVAL)
        super().__init__(f"{op}: {self.errno.name}")


def _check(op: str, rc: int) -> int:
    if rc < 0:
        raise DataplaneError(op, rc)
    return rc


@quick_init   # its fields stored straight into the instance: one is built per event (every IKE message)
@dataclass(frozen=True)
class Event:
    """Something the fast path reports upward (see DESIGN.md, the pipe)."""

    type: EventType
    spi: int = 0
    direction: Direction = Direction.IN
    hard: bool = False
    reason: int = 0
    policy_id: int = 0
    remote: Endpoint | None = None
    local: Endpoint | None = None
    selector: Selector | None = None
    data: bytes = b""
    seq: int = 0
    known: bool = False   # IKE: it names an established IKE SA of ours (ike_spi_add)
    peer: int = 0         # ... and that SA's peer, as added (its SPI when none was named)
    proven: bool = False  # IKE, not known: our SPI in it carries our tag for its sender (ike_spi_key)
    unmarked: bool = False  # IKE: it came without the non-ESP marker (a whole IKE_SA_INIT request)

    def __post_init__(self) -> None:
        """Nothing to check: the fields come from the C event (quick_init calls this)."""


def _addr_in(a: Any, ep: Endpoint | None) -> None:
    if ep is None:
        a.family = 0
        return
    raw = ep.addr.packed
    a.family = ep.addr.version
    ffi.memmove(a.addr, raw, len(raw))
    a.port = ep.port


def _addr_out(a: Any) -> Endpoint | None:
    if a.family == 4:
        return Endpoint(ipaddress.IPv4Address(bytes(a.addr[0:4])), a.port)
    if a.family == 6:
        return Endpoint(ipaddress.IPv6Address(bytes(a.addr[0:16])), a.port)
    return None


def _endpoint(family: int, raw: bytes, port: int) -> Endpoint | None:
    """A ts_addr's fields as _addr_out reads them: decoded through the pipe decoder's table of the
    same 16-byte field (our own address, in every IKE event, is built once)."""
    if family != 4 and family != 6:
        return None
    addr = _addr_or_none(family, raw)
    if addr is None:   # bytes after an IPv4 address: _addr_out never read them
        addr = ipaddress.IPv4Address(raw[:4])
    return Endpoint(addr, port)


def _remote_arg(ep: Endpoint | None) -> Any:
    """The C SA id's peer: NULL for inbound SAs, the remote endpoint for outbound ones."""
    if ep is None:
        return ffi.NULL
    a = ffi.new("ts_addr *")
    _addr_in(a, ep)
    return a


def _sel_out(s: Any) -> Selector:
    n = 4 if s.family == 4 else 16
    make = ipaddress.IPv4Address if s.family == 4 else ipaddress.IPv6Address
    src_lo, src_hi, dst_lo, dst_hi = (make(bytes(getattr(s, f)[0:n])) for f in ("src_lo", "src_hi", "dst_lo", "dst_hi"))
    return Selector(src_lo, src_hi, dst_lo, dst_hi, proto=s.proto, sport=(s.sport_lo, s.sport_hi),
                    dport=(s.dport_lo, s.dport_hi))


# ts_sa_params is filled by one struct.pack_into straight into the cffi buffer: its ~30 cffi field
# writes (and the dict initializer alike) took ~2.5 times as long, once per SA installed.  The
# layout is cffi's own (offsets and sizes read from the compiled type at import), so the C header
# stays the one definition; struct checks each integer's range as cffi did, byte strings are
# checked here (struct's "Ns" would pad or cut them silently).
_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _fields(ctype: str, names: tuple[str, ...], base: int = 0) -> list[tuple[int, str]]:
    """(offset, struct code) of the named fields of ctype, its start at base."""
    fields = dict(ffi.typeof(ctype).fields)
    out = []
    for name in names:
        f = fields[name]
        if f.type.kind == "array":
            if ffi.sizeof(f.type.item) != 1:
                raise TypeError(f"{ctype}.{name}: only byte arrays are packed as byte strings")
            out.append((base + f.offset, f"{f.type.length}s"))
        else:
            out.append((base + f.offset, _INT_CODES[ffi.sizeof(f.type)]))
    return out


def _packer(ctype: str, fields: list[tuple[int, str]]) -> struct.Struct:
    """A Struct writing fields (in the order given, which must be their order in memory) at their
    offsets, padding left as ffi.new zeroed it (0)."""
    fmt, pos = "=", 0
    for off, code in fields:
        if off < pos:
            raise TypeError(f"{ctype}: field at offset {off} is out of declaration order")
        fmt += (f"{off - pos}x" if off > pos else "") + code
        pos = off + struct.calcsize("=" + code)
    if pos > ffi.sizeof(ctype):
        raise TypeError(f"{ctype}: packed fields overrun it")
    return struct.Struct(fmt)


_ADDR_FIELDS = ("family", "addr", "port")
_SEL_FIELDS = ("family", "proto", "src_lo", "src_hi", "dst_lo", "dst_hi",
               "sport_lo", "sport_hi", "dport_lo", "dport_hi")
_SEL_SIZE = ffi.sizeof("ts_selector")


def _sa_packer(n_sel: int) -> struct.Struct:
    """ts_sa_params with n_sel selectors, values in _params's order."""
    sa = "ts_sa_params"
    fields = _fields(sa, ("spi", "dir", "keylen", "key", "esn", "replay_window", "reqid"))
    for end in ("local", "remote"):
        fields += _fields("ts_addr", _ADDR_FIELDS, ffi.offsetof(sa, end))
    fields += _fields(sa, ("soft_bytes", "hard_bytes", "soft_packets", "hard_packets", "seq_start", "n_sel"))
    for i in range(n_sel):
        fields += _fields("ts_selector", _SEL_FIELDS, ffi.offsetof(sa, "sel") + i * _SEL_SIZE)
    fields += _fields(sa, ("seq_limit", "seq_notify", "report_first_use"))
    return _packer(sa, fields)


_POLICY_SEL = ffi.offsetof("ts_policy", "sel")
_SA_PACKERS = tuple(_sa_packer(n) for n in range(lib.TS_MAX_SELECTORS + 1))
# packs at its selector's offset in its struct: pack_into writes its pad bytes too (as 0), so a
# packer starting at 0 would wipe the fields before it
_SEL_PACKER = _packer("ts_selector", _fields("ts_selector", _SEL_FIELDS))
# looked up once per process, not per event (a cffi lib attribute is a lookup by name each time)
_next_event, _EV_ACQUIRE = lib.ts_dp_next_event, lib.TS_EV_ACQUIRE
# ts_event read in one struct call, but its selector (ACQUIRE only)
_EVENT = _packer("ts_event", _fields("ts_event", ("type", "dir", "hard", "reason", "known", "proven", "unmarked",
                                                  "peer", "spi", "policy_id"))
                 + _fields("ts_addr", _ADDR_FIELDS, ffi.offsetof("ts_event", "addr"))
                 + _fields("ts_addr", _ADDR_FIELDS, ffi.offsetof("ts_event", "local"))
                 + _fields("ts_event", ("data_len", "seq")))
_EVENT_TYPE_OF = {int(t): t for t in EventType}
_EV_IKE_RAW: int = lib.TS_EV_IKE
# an IKE event's data, peer (family, 16-byte address, port) and our address alike -> its pipe message or None
IkeEncoder = Callable[[bytes, int, bytes, int, int, bytes, int], "bytes | None"]
_DIRECTION_OF = {int(d): d for d in Direction}


# an address's field of ts_addr/ts_selector is the pipe's 16-byte one (an IPv4 address first, zeros
# after): _pack_addr's int.to_bytes, not .packed (a property and a helper, a Python frame each: an
# install packs a dozen); the family is read as the class attribute _version (.version is a property)
def _sel_values(sel: Selector) -> tuple[Any, ...]:
    return (sel.src_lo._version, sel.proto, _pack_addr(sel.src_lo), _pack_addr(sel.src_hi),  # type: ignore[union-attr]
            _pack_addr(sel.dst_lo), _pack_addr(sel.dst_hi), *sel.sport, *sel.dport)


def _params(sa: SaSpec) -> Any:
    key, local, remote, soft, hard, sels = sa.key, sa.local, sa.remote, sa.soft, sa.hard, sa.selectors
    if len(key) > lib.TS_KEYMAT_MAX:
        raise ValueError(f"key of {len(key)} bytes, at most {lib.TS_KEYMAT_MAX}")
    if len(sels) > lib.TS_MAX_SELECTORS:
        raise ValueError(f"{len(sels)} selectors, at most {lib.TS_MAX_SELECTORS}")
    sel_values: list[Any] = []
    for sel in sels:
        sel_values += _sel_values(sel)
    laddr, raddr = local.addr, remote.addr
    p = ffi.new("ts_sa_params *")
    _SA_PACKERS[len(sels)].pack_into(
        ffi.buffer(p), 0,
        sa.spi, sa.direction, len(key), key, sa.esn, sa.replay_window, sa.reqid,
        laddr._version, _pack_addr(laddr), local.port, raddr._version, _pack_addr(raddr), remote.port,  # type: ignore[union-attr]
        soft.bytes, hard.bytes, soft.packets, hard.packets, sa.seq_start, len(sels),
        *sel_values,
        sa.seq_limit, sa.seq_notify, sa.report_first_use,
    )  # fmt: skip
    return p


# The worker's raw way (pipe.quick.sa_fields, spdadd_fields): the wire's fields, checked there as
# SaSpec/Policy would check them, packed as _params packs those values, without building them.  The
# 16-byte address fields are the wire's (an IPv4 address zero-padded after: what "16s" makes of its
# 4 bytes); a selector's fields come in _SEL_FIELDS's order.  tests/dataplane/test_raw_install.py
# holds the bytes to _params's.
_SEL_WIDTH = len(_SEL_FIELDS)
_SA_ESN_BIT, _SA_FIRST_USE_SHIFT = 0x01, 3   # the wire's SA flags (pipe.wire): bit0 ESN, bit3 first use
_POLICY_PACKER = _packer("ts_policy", _fields("ts_policy", ("id", "priority", "action", "reqid"))
                         + _fields("ts_selector", _SEL_FIELDS, _POLICY_SEL))


def _fields_params(p: Any, fields: SaFields) -> None:
    """Fill ts_sa_params p (as ffi.new made it, or as packed before: every field is written, the
    padding and unused selectors as 0) from an UPDATE's or ADD's checked fields."""
    (_, _, spi, raw_dir, _, key, sa_flags, window, reqid, seq_start, local_family, local_raw, local_port,
     remote_family, remote_raw, remote_port, soft_bytes, soft_packets, _, hard_bytes, hard_packets, _,
     sels) = fields  # fmt: skip
    n_sel = len(sels) // _SEL_WIDTH
    if len(key) > lib.TS_KEYMAT_MAX or n_sel > lib.TS_MAX_SELECTORS:   # sa_fields allows neither
        raise ValueError("key or selectors beyond the fast path's room")
    _SA_PACKERS[n_sel].pack_into(
        p, 0,
        spi, raw_dir, len(key), key, sa_flags & _SA_ESN_BIT, window, reqid,
        local_family, local_raw, local_port, remote_family, remote_raw, remote_port,
        soft_bytes, hard_bytes, soft_packets, hard_packets, seq_start, n_sel,
        *sels,
        0, 0, sa_flags >> _SA_FIRST_USE_SHIFT & 1,
    )  # fmt: skip


_NO_KEY = bytes(lib.TS_KEYMAT_MAX)


def _wipe(p: Any) -> None:
    # the key was copied into C: don't leave it in a cffi buffer the GC frees later
    ffi.memmove(p.key, _NO_KEY, lib.TS_KEYMAT_MAX)


def live_allocations() -> tuple[int, int]:
    """(SA entries, cipher contexts) allocated in C and not yet freed, in this whole process (every
    Dataplane): a gauge for leaks, back where it was once the SAs are deleted."""
    sas, ctxs = ffi.new("int64_t *"), ffi.new("int64_t *")
    lib.ts_live_counts(sas, ctxs)
    return int(sas[0]), int(ctxs[0])


def sa_wipe_probe(sa: SaSpec) -> tuple[bool, bytes]:
    """Key sa inside a buffer of ours and wipe it as every freed SA is wiped
    (test hook): (whether the key was in the buffer before, the buffer after)."""
    size = lib.ts_test_sa_size()
    buf = ffi.new("uint8_t[]", size + 16)
    off = (-int(ffi.cast("uintptr_t", buf))) % 16      # the SA needs 16-byte alignment
    seen = ffi.new("int *")
    p = _params(sa)
    try:
        _check("sa_wipe_probe", lib.ts_test_sa_wipe(p, buf + off, size, seen))
    finally:
        _wipe(p)
    return bool(seen[0]), ffi.buffer(buf + off, size)[:]


_STATE: dict[int, SaState] = {lib.TS_SA_LARVAL: "larval", lib.TS_SA_MATURE: "mature", lib.TS_SA_DEAD: "dead"}
_ALG = {20: Alg.AES128GCM16, 36: Alg.AES256GCM16}


def _info(i: Any) -> SaInfo:
    return SaInfo(
        spi=i.spi,
        direction=Direction(i.dir),
        state=_STATE[i.state],
        alg=_ALG.get(i.keylen),
        esn=bool(i.esn),
        reqid=i.reqid,
        replay_window=i.replay_window,
        local=_addr_out(i.local),
        remote=_addr_out(i.remote),
        seq=i.seq,
        soft_fired=bool(i.soft_fired),
        hard_fired=bool(i.hard_fired),
        age_seconds=i.age_ns // 1_000_000_000,
        counters=dict(zip(SA_COUNTERS, ffi.unpack(i.counters, len(SA_COUNTERS)), strict=True)),
    )


class Dataplane:
    """One SAD + SPD + batch loops.  Thread-safe: run(queue) on one thread per queue, the rest anywhere."""

    def __init__(self) -> None:
        dp = lib.ts_dp_new()
        if dp == ffi.NULL:
            raise MemoryError("ts_dp_new")
        self._dp = ffi.gc(dp, lib.ts_dp_free)
        self._buf = ffi.new("uint8_t[]", MAX_PACKET + 256)
        self._evbuf = ffi.new("uint8_t[]", MAX_PACKET)
        self._evbuf_view = ffi.buffer(self._evbuf)
        self._ev = ffi.new("ts_event *")   # events() reads into it (on one thread: the worker's)
        self._ev_fields = ffi.buffer(self._ev)
        self._dst = ffi.new("ts_addr *")
        self._src = ffi.new("ts_addr *")
        self._drop = ffi.new("int *")
        self._icmp = ffi.new("size_t *")
        # the raw way's (update_fields, add_fields, spd_add_fields): one thread (the worker's) at a time
        self._params = ffi.new("ts_sa_params *")
        self._params_view = ffi.buffer(self._params)
        self._policy = ffi.new("ts_policy *")
        self._policy_view = ffi.buffer(self._policy)

    # --- wiring --------------------------------------------------------------
    def set_fds(self, tun: int, udp4: int = -1, udp6: int = -1) -> None:
        lib.ts_dp_set_fds(self._dp, tun, udp4, udp6)

    def set_offloads(self, vnet_hdr: bool) -> list[str]:
        """Use the TUN's virtio header and the sockets' UDP GSO/GRO where they work; what is active."""
        bits = lib.ts_dp_set_offloads(self._dp, int(vnet_hdr))
        names = {lib.TS_OFF_VNET: "tun-vnet-hdr", lib.TS_OFF_UDP_GSO: "udp-gso", lib.TS_OFF_UDP_GRO: "udp-gro"}
        return [n for bit, n in names.items() if bits & bit]

    def set_tunnel_mtu(self, mtu: int) -> None:
        lib.ts_dp_set_tunnel_mtu(self._dp, mtu)

    def set_ipv6_source_prefix(self, bits: int) -> None:
        """The IPv6 prefix an unknown or tagged IKE sender and an INVALID_SPI source count under
        (dos.ipv6_source_prefix, 1..128; DataplaneError otherwise): the fast path's default is
        TS_IPV6_SOURCE_PREFIX_DEFAULT, /64.  An established IKE SA's sender counts by its address."""
        rc = lib.ts_dp_set_ipv6_source_prefix(self._dp, bits) if 0 <= bits <= 0xFFFF else lib.TS_EINVAL
        _check("set_ipv6_source_prefix", rc)

    def add_queue(self, tun: int, udp4: int = -1, udp6: int = -1) -> int:
        """Another TUN queue with its own sockets, for one more loop thread; its index."""
        return _check("add_queue", lib.ts_dp_add_queue(self._dp, tun, udp4, udp6))

    def run(self, queue: int = 0) -> None:
        """The packet loop of one queue; returns after stop().  Releases the GIL."""
        _check("run", lib.ts_dp_run_queue(self._dp, queue) if queue else lib.ts_dp_run(self._dp))

    def stop(self) -> None:
        lib.ts_dp_stop(self._dp)

    @property
    def event_fd(self) -> int:
        return int(lib.ts_dp_event_fd(self._dp))

    def events(self) -> Iterator[Event]:
        """The queued events in turn."""
        for ev in self.events_encoding_ike(None):
            assert isinstance(ev, Event)
            yield ev

    def events_encoding_ike(self, ike: IkeEncoder | None) -> Iterator[Event | tuple[bytes, bool, int, bool]]:
        """The queued events in turn, but what ``ike`` makes of an IKE event's fields (its pipe
        message: pipe.encode_ike_event) in place of its Event, unless it answers None or the datagram
        came unmarked (an IKE_SA_INIT request: its Event says so, the rare way); with it
        whether the datagram names an established IKE SA of ours (the pipe writer's reserve), and
        that SA's peer, and whether our SPI in it carries our tag for its sender (ike_spi_key)."""
        ev, dp, evbuf = self._ev, self._dp, self._evbuf
        fields, data = self._ev_fields, self._evbuf_view
        while _next_event(dp, ev, evbuf, MAX_PACKET):
            # every field (but the selector) in one struct call: a dozen cffi attribute reads cost 3 times as much
            (ev_type, direction, hard, reason, known, proven, unmarked, peer, spi, policy_id, family, raw, port,
             local_family, local_raw, local_port, data_len, seq) = _EVENT.unpack_from(fields)  # fmt: skip
            if ike is not None and ev_type == _EV_IKE_RAW and not unmarked:
                # every client's IKE_AUTH: straight to its pipe message, no Event, Endpoint or address
                msg = ike(data[:data_len], family, raw, port, local_family, local_raw, local_port)
                if msg is not None:
                    yield msg, known == 1, peer, proven == 1
                    continue
            kind, way = _EVENT_TYPE_OF.get(ev_type), _DIRECTION_OF.get(direction)
            yield Event(
                type=kind if kind is not None else EventType(ev_type),
                spi=spi,
                direction=way if way is not None else Direction(direction),
                hard=bool(hard),
                reason=reason,
                policy_id=policy_id,
                remote=_endpoint(family, raw, port),
                local=_endpoint(local_family, local_raw, local_port),
                selector=_sel_out(ev.sel) if ev_type == _EV_ACQUIRE else None,
                data=data[:data_len],
                seq=seq,
                known=known == 1,
                peer=peer,
                proven=proven == 1,
                unmarked=unmarked == 1,
            )

    # --- SAD -----------------------------------------------------------------
    def getspi(self, lo: int = 256, hi: int = 0xFFFFFFFF) -> int:
        out = ffi.new("uint32_t *")
        _check("GETSPI", lib.ts_sad_getspi(self._dp, lo, hi, out))
        return int(out[0])

    def update(self, sa: SaSpec) -> None:
        p = _params(sa)
        try:
            _check("UPDATE", lib.ts_sad_update(self._dp, p))
        finally:
            _wipe(p)

    def add(self, sa: SaSpec) -> None:
        p = _params(sa)
        try:
            _check("ADD", lib.ts_sad_add(self._dp, p))
        finally:
            _wipe(p)

    def update_fields(self, fields: SaFields) -> None:
        """update from an UPDATE's fields as pipe.quick.sa_fields checked them (no SaSpec built)."""
        p = self._params
        _fields_params(self._params_view, fields)
        try:
            _check("UPDATE", lib.ts_sad_update(self._dp, p))
        finally:
            _wipe(p)

    def add_fields(self, fields: SaFields) -> None:
        """add from an ADD's fields as pipe.quick.sa_fields checked them (no SaSpec built)."""
        p = self._params
        _fields_params(self._params_view, fields)
        try:
            _check("ADD", lib.ts_sad_add(self._dp, p))
        finally:
            _wipe(p)

    def delete(self, spi: int, direction: Direction, remote: Endpoint | None = None) -> None:
        """An inbound SA by SPI; an outbound one by SPI and remote (peers choose those SPIs)."""
        _check("DELETE", lib.ts_sad_delete(self._dp, spi, int(direction), _remote_arg(remote)))

    def remove(self, spi: int, direction: Direction, remote: Endpoint | None = None,
               reqid: int | None = None) -> SaInfo:
        """delete, answering the SA as it went: its final counters (read under the lock that removes
        it, so no packet counts on it after).  reqid: only that SA's (else ENOENT, nothing removed).
        Checked before the removal, not under its lock: only the thread that makes these calls adds
        SAs, so the SA checked is the one removed, or it is gone (ENOENT all the same)."""
        if reqid is not None and self.get(spi, direction, remote).reqid != reqid:
            raise DataplaneError("DELETE", lib.TS_ENOENT)
        i = ffi.new("ts_sa_info *")
        _check("DELETE", lib.ts_sad_remove(self._dp, spi, int(direction), _remote_arg(remote), i))
        return _info(i)

    def flush(self) -> None:
        lib.ts_sad_flush(self._dp)

    def reserve(self, spi: int, direction: Direction, limit: int, notify: int = 0,
                remote: Endpoint | None = None) -> None:
        """Raise an SA's sequence number reservation (never lowers it); SAs named as in delete."""
        _check("RESERVE", lib.ts_sad_reserve(self._dp, spi, int(direction), _remote_arg(remote), limit, notify))

    def ike_spi_add(self, spi: bytes, peer: int = 0) -> None:
        """Our SPI of an established IKE SA: its IKE datagrams get the event queue's reserve, within
        its peer's share (all the SAs added with that peer; 0: a peer of its own).
        DataplaneError EEXIST (there already), ENOSPC (TS_IKE_SPI_MAX held: it goes without)."""
        _check("IKE_SPI_ADD", lib.ts_dp_ike_spi_add(self._dp, int.from_bytes(spi, "big"), peer))

    def addr_added(self, addr: IPAddress | None) -> None:
        """The host added addr (None: maybe any, the control process lost notices): an SA whose source
        the kernel refused tries it again with its next message if it is its own (csrc/addrwatch.c)."""
        if addr is None:
            _check("ADDR_ADDED", lib.ts_dp_addr_added(self._dp, 0, ffi.NULL))
            return
        _check("ADDR_ADDED", lib.ts_dp_addr_added(self._dp, addr.version, addr.packed))

    def ike_spi_key(self, key: bytes) -> None:
        """The key of the tags in our IKE SPIs (tunsec/ike/spi_tag.py): from now on an IKE datagram of
        no established IKE SA whose SPI of ours carries the tag for its sender has shares of its own."""
        if len(key) != 16:
            raise DataplaneError("IKE_SPI_KEY", lib.TS_EINVAL)
        buf = ffi.new("uint8_t[16]", key)
        try:
            _check("IKE_SPI_KEY", lib.ts_dp_ike_spi_key(self._dp, buf))
        finally:
            ffi.memmove(buf, bytes(16), 16)   # the copy goes; the C context keeps the key (wiped with it)

    def ike_spi_tag(self, key: bytes, r: int, addr: Endpoint) -> int:
        """The tag of R for addr under key, as the fast path computes it (the tests hold the control
        process's make_ike_spi to it)."""
        a = ffi.new("ts_addr *")
        _addr_in(a, addr)
        return int(lib.ts_ike_spi_tag(ffi.new("uint8_t[16]", key), r, a))

    def ike_spi_delete(self, spi: bytes) -> None:
        """The IKE SA went: its datagrams are anyone's again.  DataplaneError ENOENT if not there."""
        _check("IKE_SPI_DELETE", lib.ts_dp_ike_spi_delete(self._dp, int.from_bytes(spi, "big")))

    def migrate(self, spi: int, direction: Direction, new_remote: Endpoint,
                remote: Endpoint | None = None, new_local: Endpoint | None = None) -> None:
        """Move a mature SA (named as in delete) to new_remote, and our end to new_local unless
        None, keys and numbers kept."""
        new = ffi.new("ts_addr *")
        _addr_in(new, new_remote)
        local = ffi.NULL
        if new_local is not None:
            local = ffi.new("ts_addr *")
            _addr_in(local, new_local)
        _check("MIGRATE", lib.ts_sad_migrate(self._dp, spi, int(direction), _remote_arg(remote), new, local))

    def seq_limit(self, spi: int, direction: Direction, remote: Endpoint | None = None) -> tuple[int, int]:
        """An SA's (seq_limit, seq_notify); (0, 0) without a reservation."""
        i = ffi.new("ts_sa_info *")
        _check("GET", lib.ts_sad_get(self._dp, spi, int(direction), _remote_arg(remote), i))
        return int(i.seq_limit), int(i.seq_notify)

    def reqid_of(self, spi: int, direction: Direction, remote: Endpoint | None = None) -> int | None:
        """The SA's reqid; None if there is no such SA."""
        try:
            return self.get(spi, direction, remote).reqid
        except DataplaneError as err:
            if err.errno is not Errno.ENOENT:
                raise
            return None

    def get(self, spi: int, direction: Direction, remote: Endpoint | None = None) -> SaInfo:
        i = ffi.new("ts_sa_info *")
        _check("GET", lib.ts_sad_get(self._dp, spi, int(direction), _remote_arg(remote), i))
        return _info(i)

    def sas(self) -> list[SaInfo]:
        n = lib.ts_sad_count(self._dp)
        arr = ffi.new("ts_sa_info[]", max(n, 1) + 16)
        got = lib.ts_sad_list(self._dp, arr, n + 16)
        return [_info(arr[i]) for i in range(got)]

    # --- SPD -----------------------------------------------------------------
    def spd_add(self, pol: Policy) -> None:
        p = ffi.new("ts_policy *", {"id": pol.id, "priority": pol.priority, "action": pol.action, "reqid": pol.reqid})
        _SEL_PACKER.pack_into(ffi.buffer(p), _POLICY_SEL, *_sel_values(pol.selector))
        _check("SPDADD", lib.ts_spd_add(self._dp, p))

    def spd_add_fields(self, fields: SpdAddFields) -> None:
        """spd_add from an SPDADD's fields as pipe.quick.spdadd_fields checked them (no Policy built)."""
        _, policy_id, priority, raw_action, reqid, sel = fields
        _POLICY_PACKER.pack_into(self._policy_view, 0, policy_id, priority, raw_action, reqid, *sel)
        _check("SPDADD", lib.ts_spd_add(self._dp, self._policy))

    def spd_delete(self, policy_id: int) -> None:
        _check("SPDDELETE", lib.ts_spd_delete(self._dp, policy_id))

    def spd_flush(self) -> None:
        lib.ts_spd_flush(self._dp)

    def policies(self, max_n: int = 65536) -> list[PolicyInfo]:
        # sized by the SPD (and some room for policies added meanwhile), not by max_n: every DUMP
        # (each `status`) zeroed 7 MiB for a 65536-entry array, ~2 ms and as many page faults
        room = min(max_n, lib.ts_spd_count(self._dp) + 16)
        arr = ffi.new("ts_policy_info[]", room)
        got = lib.ts_spd_list(self._dp, arr, room)
        return [
            PolicyInfo(
                id=p.id,
                priority=p.priority,
                action=Action(p.action),
                reqid=p.reqid,
                out_spi=p.out_spi,
                packets=p.packets,
                selector=_sel_out(p.sel),
            )
            for p in (arr[i] for i in range(got))
        ]

    @property
    def address(self) -> int:
        """The C context's address: how the separately built benchmark module (tunsec.bench.micro) reaches it."""
        return int(ffi.cast("uintptr_t", self._dp))

    def gauges(self) -> dict[str, int]:
        """The worker's values of now that DUMP carries as GAUGEs (`tunsec status`'s worker part):
        the C allocations live in this process (live_allocations: SA entries, cipher contexts; a
        leak shows as these staying up after the SAs went), the policies in the SPD and its slots
        allocated, and the established IKE SAs' SPIs whose IKE has a reserve."""
        sas, ctxs = live_allocations()
        return {"live_sa_entries": sas, "live_cipher_contexts": ctxs, "spd_entries": int(lib.ts_spd_count(self._dp)),
                "spd_slots": int(lib.ts_spd_slots(self._dp)), "ike_spis": int(lib.ts_dp_ike_spi_count(self._dp))}

    def drops(self) -> dict[str, int]:
        arr = ffi.new("uint64_t[]", lib.TS_DROP__COUNT)
        lib.ts_dp_drops(self._dp, arr)
        return {d.name.lower(): int(arr[d.value]) for d in Drop if d != lib.TS_DROP_NONE}

    # --- single packets (tests, fuzzing, benchmarks) -------------------------
    def outbound(self, packet: bytes) -> tuple[bytes, Endpoint | None, Drop, bytes]:
        """Inner IP packet -> (ESP, peer, drop reason, ICMP answer for the TUN)."""
        dst, drop, icmp = self._dst, self._drop, self._icmp
        n = lib.ts_dp_outbound(self._dp, packet, len(packet), self._buf, len(self._buf), dst, drop, icmp)
        _check("outbound", n)
        esp = ffi.buffer(self._buf, n)[:] if n > 0 else b""
        answer = ffi.buffer(self._buf, icmp[0])[:] if icmp[0] else b""
        return esp, _addr_out(dst) if n > 0 else None, Drop(drop[0]), answer

    def inbound(self, udp_payload: bytes, src: Endpoint | None = None,
                local: Endpoint | None = None) -> tuple[bytes, Drop]:
        """UDP payload from src to our address local -> (inner IP packet or b"", drop reason)."""
        if src is not None:
            _addr_in(self._src, src)
        n = lib.ts_dp_inbound(self._dp, udp_payload, len(udp_payload), self._src if src else ffi.NULL,
                              _remote_arg(local), self._buf, len(self._buf), self._drop)
        _check("inbound", n)
        return (ffi.buffer(self._buf, n)[:] if n > 0 else b""), Drop(self._drop[0])


def vnet_segment(read: bytes, max_segs: int = 256) -> list[bytes] | None:
    """One TUN read with its virtio header -> the packets it carries (None if refused)."""
    out = ffi.new("uint8_t[]", len(read) + max_segs * lib.TS_VNET_SEG_HDR_MAX + 64)
    lens = ffi.new("uint16_t[]", max_segs)
    n = lib.ts_vnet_segment(read, len(read), out, len(out), lens, max_segs)
    if n < 0:
        return None
    segs, off = [], 0
    for i in range(n):
        segs.append(ffi.buffer(out + off, lens[i])[:])
        off += lens[i]
    return segs


def gro_coalesce(packets: list[bytes]) -> list[bytes]:
    """Inner packets -> the TUN writes (virtio header + packet) GRO makes of them."""
    blob = b"".join(packets)
    lens = ffi.new("uint32_t[]", [len(p) for p in packets] or [0])
    out = ffi.new("uint8_t[]", len(blob) + VNET_HDR_LEN * max(len(packets), 1) + 16)
    out_lens = ffi.new("uint32_t[]", max(len(packets), 1))
    n = lib.ts_gro_run(blob, lens, len(packets), out, len(out), out_lens, max(len(packets), 1))
    writes, off = [], 0
    for i in range(n):
        writes.append(ffi.buffer(out + off, out_lens[i])[:])
        off += out_lens[i]
    return writes


def gcm_seal(key: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """Raw AES-GCM through the C path: ciphertext || 16-byte tag."""
    out = ffi.new("uint8_t[]", len(plaintext) + 1)
    tag = ffi.new("uint8_t[16]")
    _check("gcm_seal", lib.ts_gcm_seal(key, len(key), iv, aad, len(aad), plaintext, len(plaintext), out, tag))
    return bytes(ffi.buffer(out, len(plaintext))) + bytes(ffi.buffer(tag, 16))


def gcm_open(key: bytes, iv: bytes, aad: bytes, sealed: bytes) -> bytes | None:
    """Raw AES-GCM open; None when the tag does not verify."""
    if len(sealed) < 16:
        return None
    ct, tag = sealed[:-16], sealed[-16:]
    out = ffi.new("uint8_t[]", len(ct) + 1)
    rc = lib.ts_gcm_open(key, len(key), iv, aad, len(aad), ct, len(ct), tag, out)
    if rc == lib.TS_ECRYPTO:
        return None
    _check("gcm_open", rc)
    return bytes(ffi.buffer(out, len(ct)))
