"""Shared LightningDataModules for the chest X-ray datasets of cxrbench, and the twin generator.

The twin (``data_modules.twin``) writes datasets in the real on-disk layouts from the real label files
shipped with torchxrayvision; the DataModules read twin and real releases through the same code path.
"""
