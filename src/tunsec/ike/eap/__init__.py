"""EAP (RFC 3748) methods for IKEv2 EAP authentication (RFC 7296 §2.16).

``packet.py`` is the EAP packet codec (Code/Identifier/Length/Type), shared by
every method; ``identity.py`` is EAP-Identity; ``mschapv2.py`` is EAP-MSCHAPv2
(RFC 2759 + draft-kamath-pppext-eap-mschapv2, MSK as RFC 3079 / strongSwan);
``tls.py`` is EAP-TLS on the gateway (RFC 5216, TLS by OpenSSL through pyOpenSSL);
``md4.py`` is MD4, which OpenSSL 3 only has in its legacy provider.
"""
