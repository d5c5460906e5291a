"""The pipeline's stages, one module or package each, each with one entry point ``run(ctx, inputs)``."""
