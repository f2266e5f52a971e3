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
