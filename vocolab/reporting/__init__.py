"""Everything a person reads: every figure (a function returning it), every Markdown
table (rendered from a results file, never typed), results files with provenance, and
the notebooks' interactive widgets."""

from vocolab.reporting import style  # noqa: F401  (chooses the matplotlib backend before pyplot is imported)
from vocolab.reporting.accuracy import plot_family_accuracy, plot_parameter_counts
from vocolab.reporting.attention import plot_attention_overlay, plot_distill_attention, plot_mod_routing
from vocolab.reporting.confusion import plot_confusion
from vocolab.reporting.costs import plot_cache_bytes, plot_inference_costs
from vocolab.reporting.distill import distill_markdown, plot_distill
from vocolab.reporting.images import plot_clip, plot_images
from vocolab.reporting.masks import layout_segments, plot_mask, plot_mask_modes
from vocolab.reporting.mod import mod_markdown, plot_mod
from vocolab.reporting.scaling import plot_error_vs_flops, plot_fit_residuals, scaling_markdown
from vocolab.reporting.style import save_figure
from vocolab.reporting.sweep import (
           plot_accuracy_vs_flops,
           plot_family_heatmap,
           plot_retention_vs_tokens,
           sweep_markdown,
)
from vocolab.reporting.tables import table1_markdown, table7_markdown
from vocolab.reporting.temporal import (
           plot_accuracy_vs_frames,
           plot_streaming,
           plot_temporal_families,
           temporal_markdown,
)
from vocolab.reporting.training import plot_training_curves, stage_losses
from vocolab.reporting.widgets import mask_explorer

__all__ = ["distill_markdown", "layout_segments", "mask_explorer", "mod_markdown", "plot_accuracy_vs_flops",
           "plot_accuracy_vs_frames", "plot_attention_overlay", "plot_cache_bytes", "plot_clip", "plot_confusion",
           "plot_distill", "plot_distill_attention", "plot_error_vs_flops", "plot_family_accuracy",
           "plot_family_heatmap", "plot_fit_residuals", "plot_images", "plot_inference_costs", "plot_mask",
           "plot_mask_modes", "plot_mod", "plot_mod_routing", "plot_parameter_counts", "plot_retention_vs_tokens",
           "plot_streaming", "plot_temporal_families", "plot_training_curves", "save_figure", "scaling_markdown",
           "stage_losses", "sweep_markdown", "table1_markdown", "table7_markdown", "temporal_markdown"]
