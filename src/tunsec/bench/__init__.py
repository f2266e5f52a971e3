"""Network-namespace topology and throughput benchmark harness for tunsec.

- :mod:`tunsec.bench.netns`: :class:`~tunsec.bench.netns.TwoHosts`, two network
  namespaces joined by a veth pair, shared by the end-to-end tests and the
  benchmark.
- :mod:`tunsec.bench.systems`: the tunnels under test (plain veth, tunsec,
  strongSwan kernel-libipsec, wireguard-go, kernel XFRM).
- :mod:`tunsec.bench.harness`: iperf3 runs, CPU and drop accounting, the
  table, the JSON and the chart (``python bench/run.py``).
- :mod:`tunsec.bench.client_setup`, :mod:`tunsec.bench.callgrind`: one
  road-warrior client's requests to the worker, and instruction counts under
  callgrind (``bench/install_cost.py``, ``bench/pipe_cost.py``).
"""
