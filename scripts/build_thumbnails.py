"""Write example_workflows/<title>.jpg, the thumbnail ComfyUI's Templates browser shows for each template (the
frontend asks for `<title>.jpg` beside `<title>.json`), from what the built-in demo makes.

The picture is the demo's own output: the last frame of docs/assets/demo.gif (made by scripts/demo_gif.py: the
demo models sampling a clip from docs/assets/demo_photo.jpg in 4 steps), below the template's flow and its one-line
description (build_workflows.TEMPLATES: the frontend shows no description of a pack's template but its file name,
so the thumbnail carries it). The demo is untrained and holds its start image still, so the thumbnail shows a still
of the clip, as the template makes it.
Run after changing the templates or the demo:  python scripts/build_thumbnails.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from build_workflows import OUT, REPO, TEMPLATES, template_path  # scripts/ is on the path of a script run from it

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
    "hunyuan_i2v_v1_to_video": "HunyuanVideo-I2V v1 (concat)  >  video",
    "hunyuan_i2v_v2_to_video": "HunyuanVideo-I2V v2 (token replace)  >  video",
    "skyreels_to_video": "SkyReels-V1 (concat)  >  video",
    "long_video_storyboard": "shot 1  >  [cut]  >  shot 2  >  report",
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
    draw.text((14, 8), "Magic141", fill=(250, 200, 120), font=font)
    draw.text((14 + draw.textlength("Magic141  ", font=font), 10), FLOWS[name], fill=(175, 180, 190),
              font=ImageFont.load_default(size=15))
    small = ImageFont.load_default(size=15)
    description = TEMPLATES[name][1]
    while draw.textlength(description, font=small) > SIZE[0] - 28:  # one line: a longer one is a bug in TEMPLATES
        small = ImageFont.load_default(size=small.size - 1)
    draw.text((14, 34), description[0].upper() + description[1:], fill=(235, 235, 240), font=small)
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
    titles = {template_path(key).stem: key for key in TEMPLATES}
    unknown = sorted(p.name for p in OUT.glob("*.json") if p.stem not in titles)
    if unknown or set(TEMPLATES) - set(FLOWS):
        sys.exit(f"templates without a title or flow text: {unknown or sorted(set(TEMPLATES) - set(FLOWS))} "
                 f"(TEMPLATES in build_workflows.py, FLOWS in {Path(__file__).name})")
    for key in TEMPLATES:
        path = template_path(key).with_suffix(".jpg")
        thumbnail(key, frame).save(path, quality=88)
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
