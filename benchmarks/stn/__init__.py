"""STN's room: its configs, specs (paper.yaml, twin.yaml, smoke.yaml), printed numbers (references.yaml) and
what its transforms sample (``python -m benchmarks.stn.stn_crop``)."""
