"""The report's sections, in the order REPORT.md shows them. Each is a module with a
``TITLE``, ``render(sources, out) -> markdown lines`` (its tables and figures; no lines
when it has no data, and then it is left out) and ``findings(sources) -> [Finding]``
(its answers as data). A new section is a module here and a line below."""

from . import (
    algorithms,
    asv,
    compilation,
    conditional,
    correctness,
    devices,
    environment,
    frameworks,
    machines,
    paper,
    parameters,
    peers,
    quality,
    sampling,
    scaling,
    splines,
    time,
    work,
)

SECTIONS = (
    time,
    sampling,
    scaling,
    parameters,
    splines,
    conditional,
    peers,
    frameworks,
    quality,
    work,
    algorithms,
    compilation,
    devices,
    machines,
    correctness,
    asv,
    paper,
    environment,
)
