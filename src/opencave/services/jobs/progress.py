"""Progress of a job as text that can also carry its numbers.

A job reports progress as text (what ``opencave jobs ls`` shows and the queue keeps); a
``Step`` is such a text that also carries a phase and how far it got, so that a caller running
the job in its own process (``opencave import table``, ``opencave ingest segmentation``) draws
bars from the same callback instead of parsing the text back.
"""

from __future__ import annotations


class Step(str):
    """``phase: done of total unit`` (``phase: done%`` in percent), with those numbers."""

    phase: str
    done: int
    total: int
    unit: str

    def __new__(cls, phase: str, done: int, total: int, unit: str = "rows") -> "Step":
        text = f"{phase}: {done}%" if unit == "%" else f"{phase}: {done:,} of {total:,} {unit}"
        step = super().__new__(cls, text)
        step.phase, step.done, step.total, step.unit = phase, int(done), int(total), unit
        return step

    def __reduce__(self):  # pickled (e.g. to another process) with its numbers
        return (Step, (self.phase, self.done, self.total, self.unit))
