"""cxrbench: five chest X-ray papers as LightningModules on shared DataModules, benchmarked side by side."""

__version__ = "0.1.0"
