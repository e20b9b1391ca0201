"""vocolab: a workbench for vision-token compression in vision-language models.

The data path is one straight line, one module per step:
scene (`data`) -> tokens + layout (`layout`) -> mask (`masks`) -> model (`models`)
-> loss / cache -> answer -> metric -> figure (`plotting`).
"""

__version__ = "0.1.0"
