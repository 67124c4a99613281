"""ES-Net (Shen et al., IEEE TIP 2021): salient erasing, P-pooling; ``docs/methods/esnet.md``."""
