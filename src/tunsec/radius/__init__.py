"""RADIUS for the gateway's ``auth = eap-radius`` (RFC 2865, RFC 3579, RFC 2548, RFC 2866), at the edge
of the IKE service; the engine only relays EAP (``tunsec.ike.eap.relay``).

``settings.py``: the servers and timers (``radius { }``, read by ``tunsec.conf.radius``);
``messages.py``: Access-Request and authenticated answers, with pyrad and its dictionary
(``dictionary`` beside it); ``client.py``: asyncio UDP (up to ``sockets`` sockets per server,
each with its own identifiers, a bounded queue for them), retransmission, counters;
``health.py``: each server port's health, shared by the relay and accounting (a dead server
passed by for a while); ``relay.py``: one EAP conversation per IKE SA;
``accounting.py``: RFC 2866 accounting of the IKE SAs eap-radius authenticated
(``radius { accounting = yes }``; ``acct_session.py`` a session and its usage, ``causes.py`` its
Acct-Terminate-Cause); ``dae.py``: Dynamic Authorization (RFC 5176), Disconnect-Requests
from the RADIUS servers (``radius { dae { enable = yes } }``).
"""
