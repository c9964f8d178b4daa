"""The HTML evaluation report: page builder, readable tables, generated samples (no Kedro)."""

from steerable_alignment.reporting.html import (
    Chart,
    Panel,
    Section,
    SideBySide,
    Table,
    Text,
    render_report,
)

__all__ = ["Chart", "Panel", "Section", "SideBySide", "Table", "Text", "render_report"]
