"""winback pipeline: configuration, engine, I/O, training, tracking, scoring and the CLI."""

import os

# LightGBM's OpenMP threads spin while waiting by default; on a busy 2-core machine that made a
# CDNOW fit 9x slower (66 s vs 7.5 s measured). Passive waiting costs nothing measurable when idle.
# Set before LightGBM loads its OpenMP runtime; an explicit environment value still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
