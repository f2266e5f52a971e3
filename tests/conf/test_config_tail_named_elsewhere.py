"""Review revlast2 F4: an error about another entry names a value's tail (h/fixcfg, syntax.withhold_tails).

h/fixcfg reads on after the '}' that ends a bare value, and withholds what is said about the statements there
(they may be a secret's rest): withhold_tails replaces an issue whose *key* is a tail's path or under one.
An issue keyed elsewhere whose *message* names a tail entry is left as it is: secrets._refuse_one_user_twice
reports the second of two EAP entries for one user at that entry's key, naming the first entry's section
path and user name, which here are the rest of bob's password."""

from __future__ import annotations

import pytest
from config_data import psk_gateway

from tunsec.conf.config import parse_config
from tunsec.conf.errors import ConfigError

TAIL = "correcthorsebattery"


def test_an_error_keyed_at_another_entry_does_not_name_a_secrets_rest() -> None:
    secrets = ("secrets { ike { secret = s3cretS3cretS3cret0 }\n"
               "  eap-bob { id = bob\n"
               f"    secret = pa55}}eap-{TAIL} {{ id = Carol\n"   # bob's password: pa55}eap-correcthorsebattery ...
               "    secret = x }\n"
               "  eap-carol { id = carol\n"
               "    secret = y }\n"
               "}\n")
    text = psk_gateway().replace("secrets { ike { secret = s3cret } }", secrets)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "tunsec.conf")
    shown = str(info.value)
    assert TAIL not in shown and "Carol" not in shown, f"the rest of bob's password is in the error: {shown!r}"


def test_a_warning_naming_a_tails_section_by_name_alone_does_not_echo_it() -> None:
    """Beyond the path (h/fixsweep): a message may name another entry by its name alone.  The rest of
    bob's password opens a pool; a connection of %any whose remote_ts overlaps it is warned about at
    that connection's key, the warning naming the pool and its range (pools._other_pools_warnings).
    strongSwan reads this configuration, so it loads: the warning is what ``tunsec check`` shows."""
    secrets = ("secrets { ike { secret = 0sQ29ycmVjdC1Ib3JzZS1CYXR0ZXJ5LVN0YXBsZS0xMjM0NQ== }\n"
               "  eap-bob { id = bob\n"
               f"    secret = pa55}}}}pools {{ {TAIL} {{ addrs = 10.1.0.0/24 }} }}\n")
    text = psk_gateway().replace("id = moon.example", "id = %any").replace("secrets { ike { secret = s3cret } }",
                                                                            secrets)
    cfg = parse_config(text, "tunsec.conf")
    shown = "\n".join(map(str, cfg.warnings))
    assert "eap-bob.secret" in shown and "has a warning" in shown, f"no warning at bob's password: {shown!r}"
    assert TAIL not in shown and "10.1.0.1" not in shown, f"the rest of bob's password is in a warning: {shown!r}"
