"""Training: the run every training script shares, its epoch, optimizers and lr schedules by name,
classification's task, the running metrics, and where the model runs."""
