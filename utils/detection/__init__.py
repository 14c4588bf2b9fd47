"""Helpers of COCO detection alone (detect.py, predict.py and paramflops.py's detector rows), as
models/detection holds its models: COCO data and evaluation, the detection task of the shared
run, checkpoint files, complexity."""
