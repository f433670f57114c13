"""The built-in architecture demo: hand-set pass-through weights for the real DiT and VAE, untrained encoders and an
untrained SD1.5-format image model, written as the files ComfyUI users keep. Only the CLI and ./run.sh import it;
no loader does."""
