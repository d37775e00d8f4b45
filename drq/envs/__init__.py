"""DeepMind Control from pixels: the pixel env, its worker process, the task table and the rendering setup."""

# fast_render's values (drq.envs.pixels), declared here (no numpy or GL import) for the config schema to read.
FAST_RENDER_CHOICES = (False, True, "no_msaa", "no_shadows")
