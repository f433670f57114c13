"""Make docs/assets/demo.gif: the built-in demo sampling one clip from a photograph, each denoising step decoded.

    .venv/bin/python scripts/demo_gif.py                                  # the README's GIF (docs/assets/demo_photo.jpg)
    .venv/bin/python scripts/demo_gif.py --image my_photo.jpg --resolution 384x224 --out /tmp/mine.gif

Runs the CLI's `generate` path (demo models, encoders, 4 Euler steps, VAE) and keeps the latent after every step;
the GIF shows the photograph itself, then frame 0 of each latent, from the seeded noise to the final frame, captioned.
Any `generate` option applies (--image, --resolution, --fit, --seed, ...); --image defaults to the README's photo.

The demo is untrained: its hand-set weights land on the start image (magic141_core/demo/passthrough.py). It shows the
pipeline, not motion, and the result is blurred: the demo VAE is a hand-set colour autoencoder whose latent holds
only R, G, B at 1/8 of the size (a 384x224 frame is 48x28 latent pixels), so its decoder can only enlarge them with
a smooth filter; a trained VAE's 16 latent channels carry the detail. A real photograph shows that blur honestly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magic141_core.cli import build_parser  # noqa: E402
from magic141_core.cli.commands import load_start_image  # noqa: E402
from magic141_core.cli.models import load_dit_and_vae, load_encoders, resolve_models  # noqa: E402

PHOTO = Path("docs/assets/demo_photo.jpg")  # NASA portrait of Eileen Collins, public domain (docs/assets/README.md)


def captioned(frame, caption: str) -> Image.Image:
    """A float [H, W, 3] frame in 0..1 as an image with `caption` in its top band (build_thumbnails.py crops it)."""
    still = Image.fromarray((frame.float().clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    ImageDraw.Draw(still).text((6, 4), caption, fill=(255, 255, 255))
    return still


def main() -> None:
    parser = build_parser()
    argv = ["generate", "--prompt", "the astronaut smiles at the camera", "--frames", "5", "--dtype", "fp32",
            "--resolution", "384x224", *sys.argv[1:]]
    if "--image" not in argv:
        argv += ["--image", str(PHOTO)]
    out = Path("docs/assets/demo.gif")
    if "--out" in argv:
        i = argv.index("--out")
        out = Path(argv.pop(i + 1))
        argv.pop(i)
    args = parser.parse_args(argv)

    import dataclasses

    from magic141_core.sampling.sampler import latent_shape, sample_latent
    from magic141_core.sampling.noise import make_noise
    from magic141_core.vae import scale_latent, unscale_latent

    prior = load_start_image(args.image, args.resolution, args.fit)
    paths = resolve_models(args)
    encoders, (dit, vae) = load_encoders(args, paths), load_dit_and_vae(args, paths)
    cond = encoders.encode(args.prompt, prior)
    image = prior.movedim(-1, 1) * 2 - 1  # [1, 3, H, W] in [-1, 1]
    cond = dataclasses.replace(cond, reference=scale_latent(vae.encode(image).mean))
    shape = latent_shape(args.frames, prior.shape[1], prior.shape[2])
    latents = [make_noise(shape, args.seed)[:, :, :1]]  # what sample_latent starts from, for the first still
    sample_latent(dit, cond, shape, steps=args.steps, shift=args.shift, seed=args.seed,
                  callback=lambda step: latents.append(step.x[:, :, :1].clone()))
    stills = [captioned(prior[0], "the photograph (start image)")]
    for k, latent in enumerate(latents):
        frame = vae.decode(unscale_latent(latent))[0, :, 0].movedim(0, -1)  # [H, W, 3] in [0, 1]
        caption = "seeded noise" if k == 0 else f"after step {k}/{args.steps}"
        stills.append(captioned(frame, f"Magic141 architecture demo: {caption}"))
        print(f"decoded {caption}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    durations = [1500] + [600] * (len(stills) - 2) + [2000]
    stills[0].save(out, save_all=True, append_images=stills[1:], duration=durations, loop=0, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
