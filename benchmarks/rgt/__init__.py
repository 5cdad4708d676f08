"""RGT's room: its configs, specs (paper.yaml, smoke.yaml), printed numbers (references.yaml) and the BYOA
measurements (``python benchmarks/rgt/byoa_localization.py``, ``python benchmarks/rgt/byoa_gmml.py``)."""
