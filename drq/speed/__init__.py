"""What makes the update fast on the hardware at hand: precision, torch.compile, CUDA graphs, the hardware probe."""
