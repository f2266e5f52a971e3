"""Review revcert3 F2: a peer certificate with more than 64 subjectAltNames is refused even where no
certificate of its chain (nor the configured CA) has a name constraint, so no name is compared with
any subtree.

certs.check_names caps every certificate of the chain, the peer's own included, at MAX_NAMES = 64
names, against the cost of cryptography's name-constraint check (names x subtrees).  That cost is
bounded already by _check_name_cost (the chain's subtrees x names, 0 without any constraint) and by
cryptography's own budget; the per-certificate cap on the leaf refuses legitimate certificates whose
names cost nothing: a multi-domain certificate a site peer reuses (public CAs issue up to 100 SANs,
Let's Encrypt's limit; cloud and CDN certificates carry hundreds), which strongSwan, the usual other
end, accepts without such a limit.  The same cap refuses it during the EAP-TLS handshake
(eap/tls._cert_refused).
"""

from __future__ import annotations

import datetime

from OpenSSL import crypto

from tunsec.ike.certs import verify_peer
from tunsec.ike.eap import tls
from tunsec.ike.identity import Identity
from tunsec.ike.testing import EPOCH, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=30)
ROOT = make_ca("revcert3 names root")
SUB = make_ca("revcert3 names sub", issuer=ROOT)
# a site gateway's certificate that also names the site's 100 web hosts (no name constraint anywhere)
NAMES = ["vpn.site.example", *(f"www{i}.site.example" for i in range(99))]
SITE = make_cert(SUB, "vpn.site.example", san=NAMES)


def test_a_peer_certificate_of_100_names_without_name_constraints_verifies() -> None:
    verify_peer([SITE.cert, SUB.cert], [ROOT.cert], NOW, Identity.parse("vpn.site.example"))


def test_eap_tls_takes_it_during_the_handshake_too() -> None:
    assert tls._cert_refused(crypto.X509.from_cryptography(SITE.cert)) is None
