"""Parameters and FLOPs as the ECA-Net paper counted them."""
