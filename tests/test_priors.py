"""Retrieval prior: a CLIP index over an image folder, incremental updates, queries, and path safety."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest
from PIL import Image
from tiny_clip import save_tiny_clip

from magic141_core.priors import INDEX_NAME, ClipEmbedder, ImageIndex, resolve_inside, retrieve


def _write_image(path, seed, size=(40, 30)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return ClipEmbedder(save_tiny_clip(tmp_path_factory.mktemp("clip")))


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i in range(5):
        _write_image(images / f"img{i}.png", i)
    _write_image(images / "sub" / "deep.jpg", 99)
    return images


class Counting:
    """An embedder proxy that records how many images each call embeds."""

    def __init__(self, inner):
        self.inner, self.identity, self.image_size, self.calls = inner, inner.identity, inner.image_size, []

    def embed_images(self, images):
        self.calls.append(len(images))
        return self.inner.embed_images(images)


def test_an_items_own_embedding_finds_it_first(embedder, folder):
    index = ImageIndex(folder)
    stats = index.update(embedder, batch_size=4)
    assert stats.embedded == 6 and (folder / INDEX_NAME).is_file()
    for name in ("img3.png", "sub/deep.jpg"):
        with Image.open(folder / name) as image:
            own = embedder.embed_images([image.convert("RGB")])[0]
        best = index.query(own, k=3)
        assert best[0].path == folder / name and best[0].score == pytest.approx(1.0, abs=1e-4)
        assert len(best) == 3 and best[0].score >= best[1].score >= best[2].score


def test_reindex_embeds_only_what_changed(embedder, folder):
    ImageIndex(folder).update(embedder)
    counting = Counting(embedder)
    stats = ImageIndex(folder).update(counting)  # reloaded from disk, nothing changed
    assert counting.calls == [] and stats.kept == 6

    _write_image(folder / "new.png", 50)  # added
    time.sleep(0.01)
    _write_image(folder / "img1.png", 51, size=(41, 30))  # changed (size and mtime)
    os.remove(folder / "img2.png")  # deleted
    counting = Counting(embedder)
    index = ImageIndex(folder)
    stats = index.update(counting)
    assert sum(counting.calls) == 2 and (stats.embedded, stats.removed, stats.kept) == (2, 2, 4)
    assert sorted(k[0] for k in index.keys) == ["img0.png", "img1.png", "img3.png", "img4.png", "new.png",
                                                "sub/deep.jpg"]
    assert index.embeddings.shape[0] == 6


def test_corrupt_and_non_image_files_are_skipped_by_name(embedder, folder, caplog):
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    with caplog.at_level(logging.WARNING):
        stats = ImageIndex(folder).update(embedder)
    assert stats.skipped == 1 and stats.embedded == 6
    assert "broken.png" in caplog.text


def test_retrieve_returns_scored_paths(embedder, folder):
    matches = retrieve(folder, "a red car", embedder, k=2)
    assert len(matches) == 2 and all(m.path.is_file() for m in matches)
    assert -1.0 <= matches[1].score <= matches[0].score <= 1.0


def test_empty_folder_query_is_a_clear_error(embedder, tmp_path):
    (tmp_path / "empty").mkdir()
    index = ImageIndex(tmp_path / "empty")
    index.update(embedder)
    with pytest.raises(ValueError, match="empty"):
        index.query(embedder.embed_text(["a cat"])[0])


def test_folders_outside_the_allowed_root_are_refused(tmp_path):
    root = tmp_path / "input"
    (root / "ok").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "link_out").symlink_to(tmp_path / "secret", target_is_directory=True)
    assert resolve_inside(root, "ok") == (root / "ok").resolve()
    for bad in ("../secret", str(tmp_path / "secret"), "link_out", "ok/../../secret", ""):
        with pytest.raises(ValueError, match="inside|outside"):
            resolve_inside(root, bad)


def test_missing_clip_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a CLIP model folder"):
        ClipEmbedder(tmp_path)
