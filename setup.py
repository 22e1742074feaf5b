"""Build the optional C accelerators; everything else is in pyproject.toml.

The extensions are ``optional``: without a C compiler the package installs and runs on its
pure-Python paths (see ``quiesce._accel``)."""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wno-unused-function"]

setup(
    ext_modules=[
        Extension(
            "quiesce._httpfast",
            ["src/quiesce/_ext/httpfast.c"],
            optional=True,
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "quiesce._h2fast",
            ["src/quiesce/_ext/h2fast.c"],
            optional=True,
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "quiesce._logfast",
            ["src/quiesce/_ext/logfast.c"],
            optional=True,
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "quiesce._checkfast",
            ["src/quiesce/_ext/checkfast.c"],
            optional=True,
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "quiesce._dbfast",
            ["src/quiesce/_ext/dbfast.c"],
            optional=True,
            extra_compile_args=_FLAGS,
        ),
    ]
)
