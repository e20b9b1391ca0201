"""Everything a person reads: every figure (a function returning it), every Markdown
table (rendered from a results file, never typed), results files with provenance, and
the notebooks' interactive widgets."""

from vocolab.reporting import style  # noqa: F401  (chooses the matplotlib backend before any figure module imports pyplot)
