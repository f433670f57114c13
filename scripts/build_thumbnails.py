"""Write example_workflows/<name>.jpg, the thumbnail ComfyUI's Templates browser shows for each template (the
frontend asks for `<name>.jpg` beside `<name>.json`), from what the built-in demo makes.

The picture is the demo's own output: the last frame of docs/assets/demo.gif (made by scripts/demo_gif.py: the
demo models sampling a clip from docs/assets/demo_start.png in 4 steps), below the template's flow. The demo is
untrained and holds its start image still, so the thumbnail shows a still of the clip, as the template makes it.
Run after changing the templates or the demo:  python scripts/build_thumbnails.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "example_workflows"
DEMO_GIF = REPO / "docs" / "assets" / "demo.gif"
SIZE = (512, 288)
CAPTION = 22  # rows of the demo GIF's caption band, cropped away

FLOWS = {
    "image_to_video": "image  >  video",
    "text_to_image_to_video": "text  >  image  >  video",
    "retrieval_prior_to_video": "prompt  >  retrieved image  >  video",
    "prior_switch_to_video": "generated | retrieved | own image  >  video",
    "long_video": "image  >  window 1  >  window 2  >  window 3 ...",
    "lora_to_video": "image  +  LoRA  >  video",
    "hunyuan_i2v_long_video": "HunyuanVideo-I2V  >  long video",
}


def demo_frame() -> Image.Image:
    """The demo's final frame (the clip after step 4/4), without its caption band."""
    with Image.open(DEMO_GIF) as gif:
        gif.seek(gif.n_frames - 1)
        frame = gif.convert("RGB")
    return frame.crop((0, CAPTION, frame.width, frame.height))


def thumbnail(name: str, frame: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", SIZE, (24, 26, 32))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=18)
    draw.text((14, 10), "Magic141", fill=(250, 200, 120), font=font)
    draw.text((14, 34), FLOWS[name], fill=(230, 230, 235), font=ImageFont.load_default(size=15))
    area = (SIZE[0] - 28, SIZE[1] - 72)  # below the text, 14 px margins
    if name == "long_video":  # three windows of the shot, side by side
        width = (area[0] - 2 * 8) // 3
        tile = frame.resize((width, round(width * frame.height / frame.width)), Image.Resampling.LANCZOS)
        for i in range(3):
            canvas.paste(tile, (14 + i * (width + 8), 62 + (area[1] - tile.height) // 2))
    else:
        scale = min(area[0] / frame.width, area[1] / frame.height)
        tile = frame.resize((round(frame.width * scale), round(frame.height * scale)), Image.Resampling.LANCZOS)
        canvas.paste(tile, ((SIZE[0] - tile.width) // 2, 62))
    return canvas


def main() -> None:
    frame = demo_frame()
    names = sorted(p.stem for p in OUT.glob("*.json"))
    missing = set(names) - set(FLOWS)
    if missing:
        sys.exit(f"no flow text for {sorted(missing)}: add them to FLOWS in {Path(__file__).name}")
    for name in names:
        thumbnail(name, frame).save(OUT / f"{name}.jpg", quality=88)
        print(f"wrote example_workflows/{name}.jpg")


if __name__ == "__main__":
    main()
