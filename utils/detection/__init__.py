"""Helpers of COCO detection alone (detect.py, predict.py and paramflops.py's detector rows), as
models/detection holds its models: COCO data and evaluation, the loops, checkpoint files, complexity."""
