# The C fast path is a cffi extension; everything else lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["src/tunsec/dataplane/_build.py:ffibuilder"])
