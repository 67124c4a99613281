"""Re-ID methods: LightningModules that train and describe images; the rest is shared."""
