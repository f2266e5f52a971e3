"""``remote.groups`` and the eap-radius settings that give groups (``radius.class_group``,
``filter_id``): a gateway with two connections alike but for groups and pools reaches the engine
with each connection's groups; ``groups`` that nothing could satisfy is an error naming file,
line and key (only RADIUS says who is a member: no attribute certificates)."""

from __future__ import annotations

from pathlib import Path

import connections_data
import pytest
from connections_data import Pki, line_of, moon_dir

from tunsec.conf.config import load_config
from tunsec.conf.errors import ConfigError
from tunsec.ike.identity import Identity

pki = connections_data.pki   # the module-scoped PKI fixture (a conftest here would shadow tests/conftest)


def connection(name: str, groups: str, pool: str, auth: str = "eap-radius") -> str:
    return f"""    {name} {{
        local_addrs = 192.168.0.1
        pools = {pool}
        local {{
            auth = pubkey
            certs = moonCert.pem
            id = moon.strongswan.org
        }}
        remote {{
            auth = {auth}
            eap_id = %any
            groups = {groups}
        }}
        children {{
            net {{
                local_ts = 10.1.0.0/16
            }}
        }}
    }}
"""


RADIUS = """radius {
    servers {
        fr {
            address = 10.0.0.5
            secret = "radius secret 1"
        }
    }
    class_group = yes
}
pools {
    staff { addrs = 10.3.1.0/24 }
    guests { addrs = 10.3.2.0/24 }
}
"""
GATEWAY = RADIUS + "connections {\n" + connection("rw-staff", "staff", "staff") \
    + connection("rw-guests", "guests, OU=contractors", "guests") + "}\n"


def issues(tmp: Path, pki: Pki, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(moon_dir(tmp, pki, text))
    return [str(e).removeprefix(f"{tmp}/") for e in info.value.errors]


def test_each_connections_groups_and_the_radius_settings_reach_the_engine(tmp_path: Path, pki: Pki) -> None:
    config = load_config(moon_dir(tmp_path, pki, GATEWAY))
    assert config.radius is not None and (config.radius.class_group, config.radius.filter_id) == (True, False)
    staff, guests = config.connections
    assert (staff.ike.remote.groups, staff.ike.pools) == ((Identity.parse("staff"),), ("staff",))
    assert guests.ike.remote.groups == (Identity.parse("guests"), Identity.parse("OU=contractors"))
    filter_id = load_config(moon_dir(tmp_path, pki, GATEWAY.replace("class_group = yes", "filter_id = yes")))
    assert filter_id.radius is not None and (filter_id.radius.class_group, filter_id.radius.filter_id) == (False, True)


def test_the_eap_radius_keys_default_to_no(tmp_path: Path, pki: Pki) -> None:
    text = GATEWAY.replace("class_group = yes", "").replace("groups = guests, OU=contractors", "") \
        .replace("groups = staff", "")
    radius = load_config(moon_dir(tmp_path, pki, text)).radius
    assert radius is not None and (radius.class_group, radius.filter_id, radius.gives_groups) == (False, False, False)


def test_groups_no_radius_setting_gives_is_an_error_at_the_key(tmp_path: Path, pki: Pki) -> None:
    text = GATEWAY.replace("    class_group = yes\n", "")
    found = issues(tmp_path, pki, text)
    line = line_of(text, "groups = staff")
    assert found[0] == (f"swanctl.conf:{line}: connections.rw-staff.remote.groups: no group membership comes from "
                        "RADIUS: set radius { class_group = yes } (an Access-Accept's Class attributes) or "
                        "filter_id = yes (its Filter-Id)"), found
    assert len(found) == 2 and "connections.rw-guests.remote.groups" in found[1]


def test_groups_with_another_auth_than_eap_radius_is_an_error_at_the_key(tmp_path: Path, pki: Pki) -> None:
    text = RADIUS + "connections {\n" + connection("rw", "staff", "staff", auth="eap-mschapv2") + "}\n"
    (found,) = issues(tmp_path, pki, text)
    assert found == (f"swanctl.conf:{line_of(text, 'groups = staff')}: connections.rw.remote.groups: group "
                     "memberships come only from RADIUS (its Access-Accept): groups needs auth = eap-radius "
                     "(attribute certificates, which certify them otherwise, are not supported)")


@pytest.mark.parametrize(("key", "value", "says"), [
    ("class_group", "maybe", "not a boolean (yes or no): 'maybe'"),
    ("filter_id", "2", "not a boolean (yes or no): '2'"),
])
def test_bad_eap_radius_values_name_the_key(tmp_path: Path, pki: Pki, key: str, value: str, says: str) -> None:
    text = GATEWAY.replace("class_group = yes", f"{key} = {value}")
    found = issues(tmp_path, pki, text)
    assert f"swanctl.conf:{line_of(text, f'{key} = {value}')}: radius.{key}: {says}" in found, found


def _own_warnings(conf: Path) -> list[str]:
    """The load's warnings but those of the files' modes (moon_dir writes them as the umask says)."""
    return [str(w) for w in load_config(conf).warnings if "every local user may read it" not in str(w)]


def test_eap_radius_without_trust_eap_identity_warns_of_the_unproven_limits(tmp_path: Path, pki: Pki) -> None:
    warnings = [w.removeprefix(f"{tmp_path}/") for w in _own_warnings(moon_dir(tmp_path, pki, GATEWAY))]
    assert len(warnings) == 2 and all("without radius.trust_eap_identity" in w for w in warnings), warnings
    assert warnings[0].startswith("swanctl.conf:") and "connections.rw-staff.remote.auth: " in warnings[0]
    assert "8 IKE SAs per name from one source, 32 per source, 2 virtual IPs per name from one source" in warnings[0]
    trusted = GATEWAY.replace("class_group = yes", "class_group = yes\n    trust_eap_identity = yes")
    assert _own_warnings(moon_dir(tmp_path, pki, trusted)) == []
