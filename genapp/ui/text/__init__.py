"""The app's prose, apart from the wiring: one module per tab (`diffusion`, `flows`, `train`) holding the
explanations in the lecture's notation and the functions that format `genapp.lab` results as Markdown."""
