"""DeepMind Control from pixels: the pixel env, its worker process, the task table and the rendering setup."""
