"""Training: typed run config, tokenised batches, the jitted train step and the loop."""
