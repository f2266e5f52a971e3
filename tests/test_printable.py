"""printable.escaped names one text only (review revmetrics R1): a backslash is doubled, so that a
peer's identity holding the four characters ``\\x1b`` no longer reads, in `tunsec status`, as one
holding an ESC; and the CLI's own pass over the server's text leaves the server's escapes as they
are (doubled again, each would read as two characters of the peer's).

Real parts: the status document and text tunsec.status builds for a gateway of clients
(tests/status_state.py), the CLI's function that shows the server's answers."""

from __future__ import annotations

import ast

import pytest
import status_state

from tunsec import cli, printable
from tunsec.status import render, status_document

# pairs a reader could not tell apart when a backslash was left as it is
LOOKALIKES = [("\\x1b[2J", "\x1b[2J"), ("a\\nb", "a\nb"), ("\\u202eevil", "\u202eevil"), ("\\\\", "\\"),
              ("x\\x85", "x\x85")]


@pytest.mark.parametrize(("literal", "control"), LOOKALIKES)
def test_text_holding_an_escape_reads_apart_from_the_character(literal: str, control: str) -> None:
    assert printable.escaped(literal) != printable.escaped(control)   # before: both read \x1b[2J ...
    for text in (literal, control):
        out = printable.escaped(text)
        assert out.isprintable()
        assert ast.literal_eval(f'"{out}"') == text   # the escapes read back as the text, whatever it held


def test_text_without_backslash_or_control_is_as_it_was() -> None:
    for text in ("plain ascii", "é ü 日本", "CN=alice, O=Example", ""):
        assert printable.escaped(text) is text


def test_the_status_text_shows_an_identity_holding_escapes_apart_from_one_holding_controls() -> None:
    gw = status_state.gateway(2)
    gw.clients[0].record["remote_id"] = "moon\\x1b[2J.example"   # the text, backslash and all
    gw.clients[1].record["remote_id"] = "moon\x1b[2J.example"    # an ESC
    text = render(status_document(status_state.daemon(gw), gw.dump()))
    ids = [line.split(" <-> ", 1)[1].split(",", 1)[0] for line in text.splitlines() if " <-> " in line]
    assert sorted(ids) == ["moon\\\\x1b[2J.example", "moon\\x1b[2J.example"]   # before: the same twice
    assert "\x1b" not in text
    # the CLI shows the server's text as it came: its escapes are not doubled again
    assert cli._shown(text) == text
