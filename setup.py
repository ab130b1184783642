"""Build glue: setuptools runs the cffi builder to compile xenevt._native."""

from setuptools import setup

setup(cffi_modules=["xenevt/_build_native.py:ffibuilder"])
