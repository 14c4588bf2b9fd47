"""The training loop: one epoch, one evaluation pass, the running metrics, and where the model runs."""
