"""tunsec: userspace IPsec VPN (IKEv2 control process + ESP dataplane worker).

Where things live (docs/layout.md says which files a typical change touches):

- ``cli.py`` (the ``tunsec`` command), ``daemon.py`` (the control process:
  lifecycle, TUN, shared ESP sockets, worker, control socket), ``status.py``;
- ``conf/``: the configuration file, one module per section;
- ``services/``: manual tunnels and IKE tunnels, one interface (``base.py``);
- ``ike/``: the sans-I/O IKEv2 engine (no sockets, no clocks);
- ``policy/``: SPD, PAD, traffic selectors, reqid/policy ids;
- ``dataplane/``: the worker process, the cffi fast path, the pipe;
- ``privilege.py`` (giving up root), ``runtime.py`` (control socket path),
  ``prepare.py`` (``tunsec prepare``), ``seqstate.py`` (manual keys' persisted
  sequence numbers), ``statedir.py`` (their directory: marker, lock, ``tunsec init-state``),
  ``logs.py``, ``loglimit.py``, ``metrics.py``,
  ``sdnotify.py``;
- ``bench/``: ``tunsec bench`` and the C microbenchmarks' module.
"""

__version__ = "0.1.0"
