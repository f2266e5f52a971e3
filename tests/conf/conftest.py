"""Fixtures of the config tests: the PKI the certificate tests lay out (once per module)."""

from __future__ import annotations

import pytest
from connections_data import Pki

from tunsec.ike.testing import make_ca, make_cert


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = make_ca("strongSwan Root CA", "ecdsa")
    sub_ca = make_ca("strongSwan Sub CA", "ecdsa", issuer=ca)
    moon = make_cert(ca, "moon.strongswan.org", ["moon.strongswan.org", "192.168.0.1"], kind="rsa")
    sun = make_cert(sub_ca, "sun.strongswan.org", ["sun.strongswan.org"], kind="ecdsa")
    return Pki(ca, sub_ca, moon, sun, make_ca("Other CA", "ecdsa"))
