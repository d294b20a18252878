"""cffi builder for nvme_ebs._nvme_ebs_c (out-of-line API mode).

The cdef is cut from csrc/nvme_ebs.h between its CDEF markers, so the header
stays the one description of the C interface.
"""

from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent
HEADER = CSRC / "nvme_ebs.h"


def cdef_from_header(text: str) -> str:
    begin = text.index("/* CDEF-BEGIN */") + len("/* CDEF-BEGIN */")
    return text[begin : text.index("/* CDEF-END */")]


ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header(HEADER.read_text()))
ffibuilder.set_source(
    "nvme_ebs._nvme_ebs_c",
    '#include "nvme_ebs.h"',
    sources=["csrc/nvme_ebs.c", "csrc/render.c"],
    include_dirs=["csrc"],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
