"""Builds the optional C accelerator for unmasking; the package works without it."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tether.protocol._mask", ["src/tether/protocol/_mask.c"], optional=True),
    ],
)
