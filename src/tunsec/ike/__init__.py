"""tunsec.ike: a sans-I/O IKEv2 engine (RFC 7296).

Bytes and time go in, bytes and events come out; there are no sockets, timers
or dataplane calls inside, and the only clock read is the wall clock that checks
certificate validity (``wall_clock``, a parameter of IkeEndpoint/IkeSa), so two
engines can be wired together in a unit test with a fake clock (see
``tunsec.ike.testing.Network``).

How its user drives it (tunsec.services.ike.IkeService; tests/ike_driver.py on
plain sockets)::

    endpoint = IkeEndpoint(configs, spi_allocator=pool.take)   # endpoint.py
    endpoint.initiate("conn", "child", now)                    # start_action=start
    endpoint.receive(datagram, (ip, port), now, local_addr=(my_ip, my_port))
    for dgram in endpoint.datagrams_to_send(now):              # Datagram(data, addr, local_port)
        send from dgram.local_port to dgram.addr (prefix 4 zero bytes if neither port is 500)
    endpoint.handle_timer(now) when now >= endpoint.get_timer()
    while (item := endpoint.next_event()) is not None:
        sa, event = item                                       # events.py
        ChildSaUp -> UPDATE(spi_in, key_in...) + ADD(spi_out, key_out...)
        ChildSaDown -> DELETE both SPIs; SpiUnused -> DELETE the larval SA

``now`` is any monotonic float (seconds). One :class:`~tunsec.ike.sa.IkeSa`
per IKE SA also works on its own (``receive``/``handle_timer``/``initiate``/
``delete``/``datagrams_to_send``/``get_timer``/``next_event``).

Modules, one concern each: ``message`` (codec), ``crypto`` (prf, prf+, key
derivation), ``dh`` (key exchange groups), ``sk`` (the Encrypted payload),
``auth`` and ``certs`` (AUTH payloads, X.509), ``identity``, ``proposals``,
``ts`` (traffic selectors), ``config``, ``events``, ``state`` (negotiated
state), ``exchanges/`` (one module per exchange; ``exchanges/responders.py`` is
the table of who answers which request; ``exchanges/__init__.py`` says where a
new exchange goes), ``sa`` (transport: message IDs, retransmission; knows tasks
only through ``exchanges/base.Task``) and ``endpoint`` (dispatch, COOKIE).
"""
