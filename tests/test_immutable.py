"""``tunsec.immutable``: frozen to mypy, a plain dataclass with the frozen one's eq and hash at run time."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

from mypy import api

import tunsec
from tunsec.immutable import immutable


@immutable
class _Pair:
    a: int
    b: bytes = b""


@immutable(slots=True)
class _Slotted:
    a: int


@dataclasses.dataclass(frozen=True)
class _FrozenPair:
    a: int
    b: bytes = b""


def test_equal_and_hash_by_fields_as_a_frozen_dataclass() -> None:
    assert _Pair(1, b"x") == _Pair(1, b"x") and _Pair(1, b"x") != _Pair(2, b"x")
    assert hash(_Pair(1, b"x")) == hash(_FrozenPair(1, b"x")) == hash((1, b"x"))
    assert len({_Pair(1), _Pair(1), _Pair(2)}) == 2
    assert repr(_Pair(1)) == "_Pair(a=1, b=b'')"


def test_slots_variant_has_no_instance_dict() -> None:
    assert _Slotted.__slots__ == ("a",) and not hasattr(_Slotted(1), "__dict__")
    assert hash(_Slotted(3)) == hash((3,))


def test_mypy_rejects_assigning_a_field(tmp_path: Path) -> None:
    src = tmp_path / "assign.py"
    src.write_text(textwrap.dedent("""
        from tunsec.immutable import immutable

        @immutable
        class P:
            a: int

        @immutable(slots=True)
        class S:
            a: int

        P(1).a = 2
        S(1).a = 2
        P(a="no")
    """))
    config = tmp_path / "mypy.ini"   # this checkout's tunsec, whatever is installed
    config.write_text(f"[mypy]\nmypy_path = {Path(tunsec.__file__).parent.parent}\n")
    out, _, status = api.run([str(src), "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
                              "--config-file", str(config), "--follow-imports", "silent"])
    assert status == 1
    assert out.count('Property "a" defined in') == 2, out
    assert 'Argument "a" to "P" has incompatible type "str"' in out, out
