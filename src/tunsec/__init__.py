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

import enum as _enum

# CPython 3.11's EnumType defines __getattr__ (a fallback to _member_map_), so every attribute read
# on an enum class (PayloadType.SA, Direction.IN, ...) goes through the slow hook that calls
# __getattribute__ from C and then could call __getattr__: ~250 instructions instead of ~40, some
# 450 times per client set-up (~2.5% of the control process's instructions).  The fallback finds
# nothing the class's own attributes do not: since 3.11 every member, alias and _simple_enum
# member is set on its class (enum.property redirects read _member_map_ themselves), which is why
# 3.12 removed it.  An unknown name still raises AttributeError.
if hasattr(_enum.EnumType, "__getattr__"):
    delattr(_enum.EnumType, "__getattr__")
