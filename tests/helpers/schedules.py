"""The compiled pass on short schedules for the core's tests (hf_gaf.compiled_step)."""

from hf_gaf.compiled_step import CompiledStep, CompileSchedule

SMALL = CompileSchedule(min_numel=2)  # the compiled pass takes the tests' small tensors (a 1-element one stays eager)
SHORT = CompileSchedule(start_step=3, switch_step=6, min_numel=2)  # the automatic CPU schedule, shortened


def with_schedule(owner, schedule: CompileSchedule = SMALL):
    """``owner`` (a GAFSGD or a GAFHook) with a fresh compiled pass on ``schedule``; returns ``owner``."""
    owner.compiled = CompiledStep(schedule)
    return owner
