"""Review revsecrets F1: a configuration error echoes part of a shared secret.

An unquoted value ends at '}' (strongSwan's grammar), so a PSK, EAP password or RADIUS secret that
holds a '}' is cut there and the rest of its line is parsed as a new key: the error names that key,
which is the secret's tail, in `tunsec check`/`up`'s output and in a refused reload's answer and
log line.  syntax._echo_name already keeps hex runs out of errors; a word-like tail is echoed."""

from __future__ import annotations

import pytest
from config_data import psk_gateway

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError

TAIL = "correcthorsebattery"


def _errors(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "tunsec.conf")
    return str(info.value)


@pytest.mark.parametrize("section", [
    "ike {{ secret = Tr0ub4dor}}{} }}",
    "ike {{ secret = x }} eap-carol {{ id = carol\n secret = pa55}}{} }}",
])
def test_a_secret_holding_a_brace_is_not_echoed_in_the_error(section: str) -> None:
    text = psk_gateway().replace("secrets { ike { secret = s3cret } }", "secrets { " + section.format(TAIL) + " }")
    shown = _errors(text)
    assert "line" in shown or "tunsec.conf:" in shown   # the error still says where
    assert TAIL not in shown, f"the secret's tail is in the error: {shown!r}"


def test_a_radius_secret_holding_a_brace_is_not_echoed_in_the_error() -> None:
    text = psk_gateway() + "radius { servers { r1 { address = 192.0.2.9\n secret = rad}" + TAIL + " } } }\n"
    shown = _errors(text)
    assert TAIL not in shown, f"the secret's tail is in the error: {shown!r}"


def test_a_secret_starting_with_a_brace_is_not_echoed_and_the_error_says_to_quote() -> None:
    """An empty bare value ends at the '}' too: the tail of ``secret = }tail`` is not a new key."""
    text = psk_gateway().replace("secret = s3cret", "secret = }" + TAIL)
    shown = _errors(text)
    assert TAIL not in shown, f"the secret's tail is in the error: {shown!r}"
    assert "secrets.ike.secret" in shown and "quote a value that holds '}'" in shown


def test_a_quoted_secret_holding_a_brace_loads_and_closing_braces_on_its_line_still_work() -> None:
    """The guard: a quoted '}' is the value's, and braces (and a comment) after a bare value close
    sections as before."""
    text = psk_gateway().replace("secrets { ike { secret = s3cret } }",
                                 'secrets { ike { secret = "Tr0ub4dor}' + TAIL + '" } }  # the PSK')
    cfg = parse_config(text, "tunsec.conf")
    assert [s.secret.reveal() for s in cfg.ike_secrets] == [b"Tr0ub4dor}" + TAIL.encode()]


STRONG = "0sQ29ycmVjdC1Ib3JzZS1CYXR0ZXJ5LVN0YXBsZS0xMjM0NQ=="
WITHHELD = "what follows the '}' that ends this value on its line has"


@pytest.mark.parametrize("tail", [
    "{} = 1 }}",            # parses: a key of secrets, refused there by its validator
    "{} {{\n x = 1 }}",     # parses: a section of secrets, on over the next line
    "include {} }}",        # an include of a file that does not exist
    '{} "x }}',             # an unterminated quoted string
], ids=["key", "section-over-lines", "include", "quote"])
def test_a_secrets_rest_after_its_brace_that_reads_on_is_not_echoed(tail: str) -> None:
    """Review revcfg F1: strongSwan reads on after the '}' that ends a bare value, so tunsec does
    too; but what follows may be a secret's rest, so neither the parser's nor a validator's error
    about it names its key or shows its text: the error is the value's, at its key."""
    text = psk_gateway().replace("secrets { ike { secret = s3cret } }",
                                 "secrets { ike { secret = pa55}" + tail.format(TAIL) + " }")
    shown = _errors(text)
    assert TAIL not in shown, f"the secret's tail is in the error: {shown!r}"
    assert f"secrets.ike.secret: {WITHHELD} an error" in shown


def test_a_warning_about_a_secrets_rest_is_not_echoed_either() -> None:
    """Review revcfg F1: a tail that parses as an entry with a weak PSK is warned about at the value
    whose '}' it follows, without its name."""
    text = psk_gateway().replace("secrets { ike { secret = s3cret } }", (
        f"secrets {{ ike {{ id = moon.example\n secret = {STRONG} }} ike-{TAIL} {{ id = nobody.example\n"
        " secret = short } }"))
    said = [str(w) for w in parse_config(text, "tunsec.conf").warnings]
    assert said and not any(TAIL in w for w in said), said
    assert any(f"secrets.ike.secret: {WITHHELD} a warning" in w for w in said), said
