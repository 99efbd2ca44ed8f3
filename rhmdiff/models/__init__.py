"""Neural networks: the paper's U-Net (``unet``)."""
