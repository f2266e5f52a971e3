"""tunsec/__init__.py drops CPython 3.11's EnumType.__getattr__ (a slow fallback to _member_map_ on
every enum attribute read).  That is safe only if every member of every enum is reachable without it:
checked here for every Enum class loaded with tunsec's modules (its own, the standard library's and
its dependencies': pyroute2, cryptography, pyrad), members, aliases and _simple_enum ones alike."""

from __future__ import annotations

import enum
import importlib
import pkgutil

import pytest

import tunsec


def _all_enum_classes() -> list[type[enum.Enum]]:
    seen: list[type[enum.Enum]] = []
    todo: list[type[enum.Enum]] = [enum.Enum]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def test_the_fallback_is_gone_and_every_member_is_a_class_attribute() -> None:
    for mod in pkgutil.walk_packages(tunsec.__path__, "tunsec."):
        if not mod.name.endswith(("_fastpath", "_cbench", "__main__")):
            importlib.import_module(mod.name)
    assert "__getattr__" not in vars(enum.EnumType)
    classes = _all_enum_classes()
    assert len(classes) > 100   # tunsec's, the standard library's and the dependencies'
    for cls in classes:
        for name, member in cls._member_map_.items():
            assert getattr(cls, name) is member, (cls, name)
        with pytest.raises(AttributeError):
            cls.no_such_member_anywhere  # noqa: B018
