"""The systems the benchmark compares, by name."""

from __future__ import annotations

from collections.abc import Callable

from tunsec.bench.systems.base import System, Unavailable
from tunsec.bench.systems.mixed import TunsecStrongSwan
from tunsec.bench.systems.strongswan import StrongSwanLibipsec
from tunsec.bench.systems.tunsec import Tunsec, TunsecIke
from tunsec.bench.systems.veth import PlainVeth
from tunsec.bench.systems.wireguard import WireguardGo
from tunsec.bench.systems.xfrm import KernelXfrm

SYSTEMS: dict[str, Callable[[], System]] = {
    PlainVeth.name: PlainVeth,
    Tunsec.name: Tunsec,
    TunsecIke.name: TunsecIke,
    StrongSwanLibipsec.name: StrongSwanLibipsec,
    WireguardGo.name: WireguardGo,
    TunsecStrongSwan.name: TunsecStrongSwan,
    KernelXfrm.name: KernelXfrm,
}

__all__ = [
    "SYSTEMS",
    "KernelXfrm",
    "PlainVeth",
    "StrongSwanLibipsec",
    "System",
    "Tunsec",
    "TunsecIke",
    "TunsecStrongSwan",
    "Unavailable",
    "WireguardGo",
]
