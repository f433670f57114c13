"""The thumbnail ComfyUI's Templates browser shows for each template (the frontend asks for `<title>.jpg` beside
`<title>.json`): the template's flow and its card line above what it makes, its own start image (inset, "start")
and its demo result as the template renders it after ./run.sh (the last frame of its clip; a long video's first,
middle and last frames), or, for a template that needs public weights, the files to download and their size.

The pictures come from a real run of each template (scripts/build_template_media.py runs them and calls
`write_thumbnail`; with --media DIR it keeps them, and `python scripts/build_thumbnails.py --media DIR` remakes the
thumbnails without running anything, e.g. after a card line changed); the demo is untrained and holds its start
image still, so a demo result is the start image as the demo VAE carries it (blurred), recoloured by the demo LoRA,
chained into windows, and so on.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from build_workflows import TEMPLATES, template_path  # scripts/ is on the path of a script run from it

SIZE = (512, 288)
SOURCES = ("generated", "retrieved", "uploaded")  # Magic141 Prior Switch's inputs, shown as its thumbnail's insets
TOP = 62  # rows of the caption: flow and card line
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
# A template that needs public weights has no demo result; its thumbnail shows the start image beside the files to
# download, on a panel in the colour of its model, with how that model takes the image, so the four (same start
# image, nearly the same files) stay apart at a glance. key -> (panel colour, how the model takes the image)
PANELS = {
    "hunyuan_i2v_long_video": ((84, 44, 40), "v1: image latent + mask concatenated (33 ch)"),
    "hunyuan_i2v_v1_to_video": ((36, 56, 104), "v1: image latent + mask concatenated (33 ch)"),
    "hunyuan_i2v_v2_to_video": ((30, 88, 56), "v2: image tokens replace frame 0 (16 ch)"),
    "skyreels_to_video": ((88, 44, 100), "SkyReels-V1: image latent concatenated (32 ch)"),
}


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    scale = min(width / image.width, height / image.height)
    return image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                       Image.Resampling.LANCZOS)


def _font(size: int):
    return ImageFont.load_default(size=size)


def thumbnail(key: str, description: str, start: Image.Image, results: list[Image.Image],
              downloads: list[tuple[str, float]] = (), sources: list[tuple[str, Image.Image]] = ()) -> Image.Image:
    """512x288: the caption (flow, `description`), then `results` side by side with `start` inset at the lower left
    (with `sources`, (label, image) of a prior switch's inputs, those instead, side by side); without results,
    `start` beside the list of `downloads` (name, bytes) and their total."""
    canvas = Image.new("RGB", SIZE, (24, 26, 32))
    draw = ImageDraw.Draw(canvas)
    draw.text((14, 8), "Magic141", fill=(250, 200, 120), font=_font(18))
    draw.text((14 + draw.textlength("Magic141  ", font=_font(18)), 10), FLOWS[key], fill=(175, 180, 190),
              font=_font(15))
    font = _font(14)
    while draw.textlength(description, font=font) > SIZE[0] - 28:  # one line (the card's, which may be longer)
        font = _font(font.size - 1)
    draw.text((14, 34), description, fill=(235, 235, 240), font=font)
    area = (SIZE[0] - 28, SIZE[1] - TOP - 10)  # 14 px margins
    if results:
        gap = 6
        width = (area[0] - gap * (len(results) - 1)) // len(results)
        tiles = [_fit(r, width, area[1]) for r in results]
        x = 14 + (area[0] - sum(t.width for t in tiles) - gap * (len(tiles) - 1)) // 2
        for tile in tiles:
            canvas.paste(tile, (x, TOP + (area[1] - tile.height) // 2))
            x += tile.width + gap
        left = 14
        for label, image in sources or [("start", start)]:
            inset = _fit(image, 110, 80)
            top = TOP + area[1] - inset.height
            draw.rectangle((left - 2, top - 18, left + inset.width + 1, top + inset.height + 1), fill=(24, 26, 32))
            draw.text((left, top - 16), label, fill=(235, 235, 240), font=_font(12))
            canvas.paste(inset, (left, top))
            left += inset.width + 8
    else:
        tile = _fit(start, 200, area[1])
        canvas.paste(tile, (14, TOP + (area[1] - tile.height) // 2))
        x, y = 14 + tile.width + 16, TOP + 6
        colour, how = PANELS[key]
        draw.rectangle((x - 8, TOP - 2, SIZE[0] - 6, SIZE[1] - 6), fill=colour)
        total = sum(size for _, size in downloads)
        draw.text((x, y), f"Needs downloads ({total / 1e9:.1f} GB):", fill=(250, 200, 120), font=_font(15))
        for name, size in downloads:
            y += 24
            label = name if len(name) <= 34 else name[:31] + "..."
            draw.text((x, y), f"{label}  {size / 1e9:.1f} GB", fill=(235, 235, 240), font=_font(12))
        draw.text((x, y + 26), "opening the template offers them", fill=(205, 208, 215), font=_font(12))
        draw.text((x, y + 50), how, fill=(250, 200, 120), font=_font(12))
    return canvas


def write_thumbnail(key: str, description: str, start: Image.Image, results: list[Image.Image],
                    downloads: list[tuple[str, float]] = (), sources: list[tuple[str, Image.Image]] = ()) -> None:
    """example_workflows/<title>.jpg of the template `key` (a key of build_workflows.TEMPLATES)."""
    if key not in TEMPLATES or key not in FLOWS or (not results and key not in PANELS):
        raise KeyError(f"{key}: not a template with a flow text (TEMPLATES in build_workflows.py, FLOWS here) and, "
                       "without results, a panel (PANELS)")
    thumbnail(key, description, start, results, downloads, sources).save(template_path(key).with_suffix(".jpg"),
                                                                         quality=88)


def main() -> None:
    """Remake every thumbnail from the pictures build_template_media.py kept (--media DIR): <key>.0.png is the start
    image, <key>.1.png ... the results, <key>.<label>.png a prior switch's sources."""
    import argparse
    import json
    from pathlib import Path

    from build_workflows import BUILDERS, DOWNLOADS, card
    from scripts.workflow_graph import required_downloads

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--media", type=Path, required=True)
    folder = parser.parse_args().media
    for key, build in BUILDERS.items():
        workflow = json.loads(json.dumps(build()))
        numbered = sorted((p for p in folder.glob(f"{key}.*.png") if p.suffixes[0][1:].isdigit()),
                          key=lambda p: int(p.suffixes[0][1:]))
        pictures = [Image.open(p) for p in numbered]
        sources = [(label, Image.open(folder / f"{key}.{label}.png")) for label in SOURCES
                   if (folder / f"{key}.{label}.png").is_file()]
        downloads = [(m["name"], DOWNLOADS[m["name"]][2]) for m in required_downloads(workflow)]
        write_thumbnail(key, card(key, workflow), pictures[0], pictures[1:], downloads, sources)
        print(f"wrote {template_path(key).with_suffix('.jpg').name}")


if __name__ == "__main__":
    main()
