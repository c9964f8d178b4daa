"""The ``dpo_all`` pipeline: ``dpo`` on every data set with DPO variants (``hh`` and ``hht``)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
