"""Review reveapfix F3 (fixed on h/fixproof): an EAP user whose name is not ASCII
(``secrets.eap-j { id = jörg }``, valid in strongSwan, which compares the EAP identity's bytes) got
the name ``2:#6ac3b67267``: conf/auth_rounds.eap_secrets wrote each id with str(Identity), which for
an FQDN that is not ASCII is the type and hex (a log line's form).  So jörg, with the right password,
was "unknown EAP user", and a client that sent the EAP identity "2:#6ac3b67267" was checked against
jörg's password.  Now the ids are the names as written (Identity.user: UTF-8), compared regardless
of ASCII case only (Identity's FQDN/RFC822 comparison), on a gateway's and on a client's side.

Every test here failed on main as merged (aee160c)."""
from __future__ import annotations

import dataclasses

from tests.ike.test_engine_eap import client, gateway, only, run
from tunsec.conf.auth_rounds import eap_secrets
from tunsec.conf.config import parse_config
from tunsec.ike.config import IkeConfig, LocalAuth
from tunsec.ike.events import AuthFailed, ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity

SECRETS = "secrets {\n eap-j {\n  id = jörg\n  secret = pw-of-jorg-1\n }\n}\n"


def _gateway(eap_id: str = "%any") -> IkeConfig:
    users = eap_secrets(parse_config(SECRETS, "swanctl.conf").ike_secrets)
    return dataclasses.replace(gateway(eap_id), eap_secrets=users)


def test_an_eap_user_named_in_utf8_is_found_by_that_name() -> None:
    gw = _gateway()
    assert gw.eap_account("2:#6ac3b67267") is None, "an account named by its identity type and hex"
    found = gw.eap_account("jörg")
    assert found is not None and found[0] == "jörg"
    found = gw.eap_account("JÖRG")   # ASCII case only: "Ö" is not "ö" (as strongSwan's strcasecmp)
    assert found is None
    found = gw.eap_account("JöRG")
    assert found is not None and found[0] == "jörg"


def test_joerg_logs_in_with_his_password_and_is_known_by_his_name() -> None:
    _, _, _, _, ev_b = run(client("jörg", b"pw-of-jorg-1"), _gateway())
    assert [type(e) for e in ev_b] == [IkeSaUp, ChildSaUp], only(ev_b, AuthFailed)
    (up,) = only(ev_b, IkeSaUp)
    assert up.remote_id == Identity.of_user("jörg".encode()) and up.remote_id.user == "jörg"


def test_the_hex_text_of_joergs_name_is_no_account() -> None:
    _, _, _, _, ev_b = run(client("2:#6ac3b67267", b"pw-of-jorg-1"), _gateway())
    (failed,) = only(ev_b, AuthFailed)
    assert "unknown EAP user" in failed.reason and not only(ev_b, IkeSaUp)


def test_a_client_whose_ike_identity_is_joerg_logs_in_as_joerg() -> None:
    """Without eap_id a client's EAP identity is its IKE identity (ike_auth_eap.new_client): its
    name as written, not str()'s hex, and its secret is found by it (at load and at IKE_AUTH)."""
    own = eap_secrets(parse_config(SECRETS, "swanctl.conf").ike_secrets)
    cli = client("jörg", b"pw-of-jorg-1", ike_id="jörg")
    cli = dataclasses.replace(cli, local=LocalAuth("eap-mschapv2", Identity.parse("jörg")), eap_secrets=own)
    _, _, _, ev_a, ev_b = run(cli, _gateway(""))
    assert [type(e) for e in ev_b] == [IkeSaUp, ChildSaUp], only(ev_b, AuthFailed) + only(ev_a, AuthFailed)
    assert only(ev_b, IkeSaUp)[0].remote_id == Identity.parse("jörg")
