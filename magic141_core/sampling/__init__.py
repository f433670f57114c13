"""Flow-matching sampling (Magic141 paper, 4-step DMD2): the shifted schedule, seeds and noise, the Euler loop, the
guidance modes, the conditioning it takes, and `sample_latent`, which puts them together for one clip."""
