"""Job specs: the model (:mod:`runner.spec.model`, its sections in :mod:`runner.spec.sections`, its field
types and checks in :mod:`runner.spec.fields`) and its loader (:mod:`runner.spec.load`)."""

from __future__ import annotations

from runner.spec.load import (
    job_spec_model,
    load_spec,
    parse_settings,
    parse_simulate_preemption,
    spec_from_dict,
    validate_part,
)
from runner.spec.fields import SCHEMES, URI_FORMS, Duration, Size, SpecModel, check_uri, parse_size
from runner.spec.model import JobSpec
from runner.spec.sections import Checkpoint, CostSettings, Resources, Retries, SimulatePreemption, Sync

__all__ = ["SCHEMES", "URI_FORMS", "Checkpoint", "CostSettings", "Duration", "JobSpec", "Resources", "Retries",
           "SimulatePreemption", "Size", "SpecModel", "Sync", "check_uri", "job_spec_model", "load_spec",
           "parse_settings", "parse_simulate_preemption", "parse_size", "spec_from_dict", "validate_part"]
