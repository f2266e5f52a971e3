"""The dataplane: the worker process and its C fast path (csrc/), and the pipe to it.

- ``worker.py``: the worker process (its threads: one C loop per TUN queue, and
  the asyncio loop that answers the pipe and drains events).
- ``fastpath.py``: the typed cffi wrapper over csrc/ (``Dataplane``; ``Drop`` is
  derived from csrc/tunsec_dp.h's ``enum ts_drop``).
- ``_build.py``: the cffi builds (``_fastpath`` for the worker; the benchmark
  entry points go to ``tunsec.bench._cbench``, never into it).
- ``pipe/``: the pipe's messages (codec, no I/O; wire layout in docs/pipe.md):
  ``protocol.py`` (numbers, enums, PipeError), ``values.py`` (value types and their checks),
  ``messages.py``, ``wire.py`` (structs, schemas), ``encoding.py``, ``decoding.py``
  (decode, the general decoder), ``quick.py`` (quick decoders of encode's layouts), ``fields.py``.
- ``client.py``: the control process's end of the pipe (starts the worker).
- ``tun.py``: the TUN device (create or attach, offloads, MTU, routes); ``netlink.py``: pyroute2's
  IPRoute (light) and the kernel's refusals as OSErrors.
"""
