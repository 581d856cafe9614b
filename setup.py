"""Build the Cython extensions under ext/.

Switches for ``build_ext`` (as uvloop's setup.py does):

  --cython-always     re-run Cython even when the .c file looks fresh
  --cython-annotate   write annotated HTML next to each .pyx
  --debug-build       line tracing, assertions and the CLICKACALL_DEBUG macro
  --slow-ns=N         a deliberately slower relay: every relayed packet waits N ns (the
                      performance gate's own test builds one; never for use)

The environment variables CLICKACALL_CYTHON_ALWAYS, CLICKACALL_ANNOTATE, CLICKACALL_DEBUG=1
and CLICKACALL_SLOW_NS=N set the same switches for ``pip install``.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

EXTENSIONS = ["_stun", "_tables", "_rtp", "_tls", "_stream", "_fastpath", "_loadgen", "_streamgen"]
# what links OpenSSL (libssl-dev to build): the stream listeners' TLS record layer and the
# benchmark's TLS clients
LIBRARIES = {
    "_tls": ["ssl", "crypto"],
    "_stream": ["ssl", "crypto"],
    "_streamgen": ["ssl", "crypto"],
}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")


class build_ext(_build_ext):  # noqa: N801 - setuptools command name
    user_options = _build_ext.user_options + [
        ("cython-always", None, "run Cython even if the generated C looks fresh"),
        ("cython-annotate", None, "write Cython annotated HTML"),
        ("debug-build", None, "build with line tracing and CLICKACALL_DEBUG"),
        ("slow-ns=", None, "every relayed packet waits this many ns (the gate's test only)"),
    ]
    boolean_options = _build_ext.boolean_options + [
        "cython-always",
        "cython-annotate",
        "debug-build",
    ]

    def initialize_options(self) -> None:
        super().initialize_options()
        self.cython_always = _env_flag("CLICKACALL_CYTHON_ALWAYS")
        self.cython_annotate = _env_flag("CLICKACALL_ANNOTATE")
        self.debug_build = _env_flag("CLICKACALL_DEBUG")
        self.slow_ns = os.environ.get("CLICKACALL_SLOW_NS", "0")

    def finalize_options(self) -> None:
        from Cython.Build import cythonize

        directives: dict[str, object] = {"language_level": 3}
        macros: list[tuple[str, str | None]] = []
        if self.debug_build:
            directives.update(linetrace=True, profile=True)
            macros += [
                ("CLICKACALL_DEBUG", "1"),
                ("CYTHON_TRACE", "1"),
                ("CYTHON_TRACE_NOGIL", "1"),
            ]
        slow_ns = int(self.slow_ns or 0)
        if slow_ns < 0:
            raise ValueError("--slow-ns must be 0 or more")
        if slow_ns:
            macros.append(("CLICKACALL_SLOW_NS", str(slow_ns)))
            self.force = True  # the sources did not change, the macro did
        for ext in self.distribution.ext_modules:
            ext.define_macros = list(ext.define_macros or []) + macros
            if self.debug_build:
                ext.extra_compile_args = ["-O0", "-g"]
                ext.undef_macros = ["NDEBUG"]
        self.distribution.ext_modules[:] = cythonize(
            self.distribution.ext_modules,
            compiler_directives=directives,
            annotate=bool(self.cython_annotate),
            force=bool(self.cython_always or self.debug_build),
            build_dir=os.path.join("build", "cython-debug" if self.debug_build else "cython"),
        )
        super().finalize_options()


def _ext(name: str) -> Extension:
    return Extension(
        f"ext.{name}",
        [f"ext/{name}.pyx"],
        extra_compile_args=["-O2", "-fno-strict-aliasing", "-Wno-unused-function"],
        define_macros=[("_GNU_SOURCE", "1")],
        libraries=LIBRARIES.get(name, []),
    )


setup(
    ext_modules=[_ext(n) for n in EXTENSIONS if os.path.exists(f"ext/{n}.pyx")],
    cmdclass={"build_ext": build_ext},
)
