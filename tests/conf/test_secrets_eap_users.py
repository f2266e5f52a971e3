"""EAP accounts whose user names are one identity (review reveapid F2).

User names compare regardless of ASCII case (Identity.of_user, as strongSwan's FQDN and RFC822
identities), so entries ``bob`` and ``Bob`` with two passwords would let each log in and be one
client: ``Bob`` would share bob's virtual IP and his INITIAL_CONTACT delete bob's IKE SA.  Such a
config is refused at load, naming both entries; one entry naming a user in two cases is one account.
"""
from __future__ import annotations

import pytest

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError


def _secrets(*entries: tuple[str, str, str]) -> str:
    body = "".join(f"  {name} {{\n    {ids}\n    secret = {pw}\n  }}\n" for name, ids, pw in entries)
    return f"secrets {{\n{body}}}\n"


@pytest.mark.parametrize("second", ["Bob", "BOB", "bob"])
def test_two_eap_entries_for_one_user_name_are_refused_naming_both(second: str) -> None:
    # one entry naming the user in two cases is one account, and other users load beside it
    parse_config(_secrets(("eap-bob", f"id-1 = bob\n    id-2 = {second}", "Bob-pw-2"),
                          ("eap-alice", "id = alice", "Alice-pw-1"), ("eap-at", "id = alice@example.org", "At-pw")))
    text = _secrets(("eap-bob", "id = bob", "Bob-pw-2"), ("eap-other", f"id = {second}", "other-Bobs-pw"))
    with pytest.raises(ConfigError) as err:
        parse_config(text, "swanctl.conf")
    message = str(err.value)
    assert "swanctl.conf:6: secrets.eap-other" in message and "secrets.eap-bob (swanctl.conf:2)" in message
    assert "other-Bobs-pw" not in message and "Bob-pw-2" not in message


def test_an_rfc822_user_in_another_case_is_refused_too() -> None:
    text = _secrets(("eap-a", "id = alice@example.org", "pw-1"), ("eap-b", "id = Alice@Example.org", "pw-2"))
    with pytest.raises(ConfigError, match=r"eap-b.*'Alice@Example\.org' is the user 'alice@example\.org'"):
        parse_config(text, "swanctl.conf")

