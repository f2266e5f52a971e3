"""One module per IKEv2 exchange, like strongSwan's tasks.

Each initiator-side exchange is a :class:`~.base.Task` (build a request,
process its response); each module also has the responder's ``respond``
function (process a request, build the response).

Where a new exchange goes (IKE_INTERMEDIATE, a MOBIKE UPDATE_SA_ADDRESSES, ...):

1. a module here with its Task subclass and its ``respond`` function; the Task
   declares what the transport needs to know (``runs_while_connecting`` for an
   exchange before IKE_AUTH, ``on_give_up``, ``handover``; see ``base.Task``), and
   uses ``base.KeGroups`` if it sends a KE payload (the INVALID_KE retry);
2. a row in ``responders.RESPONDERS`` (exchange type, the IKE SA states it is
   answered in, and a ``shape`` predicate if it shares its exchange type);
3. where it is started: an ``IkeSa`` API method that queues the Task, or the
   ``followups()`` of the exchange it follows (IKE_INTERMEDIATE: IkeSaInitTask's).

A feature that changes every message rather than adding an exchange belongs in
the transport's encode/decode path (``sa_fragments.py``: ``_encode``; ``sa.py``:
``_open``; ``sa_responder.py``: ``_decrypt_request``), not in a task: IKE fragmentation (RFC 7383) is there
(``_encode`` splits, ``_on_fragment`` reassembles; rules in ``fragments.py``).

A stateless answer to an IKE_SA_INIT request, given before any SA exists (COOKIE,
RFC 5685's REDIRECT), belongs in ``endpoint.py``; what the initiator does with it
in ``ike_sa_init.py``'s task (REDIRECT's notify data in ``redirect.py``).
"""
