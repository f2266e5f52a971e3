"""Policy: RFC 4301's SPD and PAD, and the ids they share.

- ``selector.py``: traffic selectors, the one model (and swanctl.conf parser)
  manual tunnels and IKE children share, and their fast-path form.
- ``spd.py``: a tunnel's selectors -> the fast path's PROTECT policies.
- ``pad.py``: the Peer Authorization Database: who may use which connection,
  with which identity, auth method and traffic selectors.
- ``ids.py``: the one allocator of reqids, policy ids and priority bands.
"""
