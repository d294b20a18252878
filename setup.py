"""Build glue for the cffi module; the metadata lives in pyproject.toml."""

from setuptools import setup

setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    # One wheel per architecture for every CPython >= 3.9 (cffi builds against the limited API).
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
