"""tunsec.ike: a sans-I/O IKEv2 engine (RFC 7296).

Bytes and time go in, bytes and events come out; there are no sockets, clocks
or dataplane calls inside, so two engines can be wired together in a unit test
with a fake clock. See ``tunsec.ike.sa`` for the per-IKE-SA state machine and
``tunsec.ike.endpoint`` for the dispatcher that owns many of them.
"""
