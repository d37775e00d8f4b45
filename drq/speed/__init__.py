"""What makes the update fast on the hardware at hand: precision, torch.compile, CUDA graphs, the hardware probe."""

# The choices of the precision and compile keys, declared here (no torch import) for the config schema to read.
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("none", "default", "max-autotune")
