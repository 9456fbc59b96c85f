"""The study's colours: one per clipping method in every figure (several settings of one method are shades of
it, ``analysis.plots.label_colors``), and one for a failed run that is no method's."""

#: One colour per clipping method in every figure of the report (several settings of one method: shades of it).
#: Red is no method's: it marks a failed run (``FAILED_COLOR``) and the injected bad batches.
METHOD_COLORS = {
    "none": "#7f7f7f",
    "value": "#8c564b",
    "norm": "#e377c2",
    "global_norm": "#1f77b4",
    "agc": "#bcbd22",
    "autoclip": "#ff7f0e",
    "zclip": "#2ca02c",
    "adagc": "#9467bd",
    "quantile": "#17becf",
}
FAILED_COLOR = "#d62728"
SPARE_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")  # methods added later
