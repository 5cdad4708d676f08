"""The IoU thresholds T of IoU-accuracy (Wang et al. 2017, RGT Table I): a leaf module, so that the boards'
declarations read them without importing torch."""

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
