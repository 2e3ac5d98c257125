"""Studies: declarative stage pipelines (YAML), cached per stage by hash, with reports."""

from postlab.studies.runner import StudyRunner
from postlab.studies.spec import Stage, Study, load_study, resolve

__all__ = ["Stage", "Study", "StudyRunner", "load_study", "resolve"]
