# The C fast path and, apart from it, the benchmark entry points are cffi
# extensions (src/tunsec/dataplane/_build.py); everything else lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["src/tunsec/dataplane/_build.py:ffibuilder", "src/tunsec/dataplane/_build.py:benchbuilder"])
