"""The pack on a real upstream ComfyUI server started by ./run.sh, when things go wrong: Cancel (no partial file, within
seconds, a queue that survives it), bad values and wrong wiring, hostile checkpoints and image links out of input/.
Every case ends with the server serving the next prompt."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from PIL import Image
from run_sh_server import CPU_SIZE, api_prompt, decode_prompt, error_of, mp4s_on_disk, node_id

from magic141_core.demo.models import DEMO_FILES


def test_interrupt_leaves_no_partial_file_and_the_next_prompt_runs(server, object_info):
    slow, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE,
                         Magic141Sampler={"steps": 60, "seed": 5}, Magic141SaveMP4={"filename_prefix": "interrupted"})
    before = mp4s_on_disk(server)
    pid = server.queue(slow)
    sampler = node_id(slow, "Magic141Sampler")
    deadline = time.time() + 300
    while not any(m["data"]["node"] == sampler for m in server.messages_for(pid, "progress")):
        assert time.time() < deadline, "the sampler never reported progress"
        time.sleep(0.05)
    server.post("/interrupt", {})
    history = server.wait(pid)
    assert history["status"]["status_str"] == "error"
    assert server.messages_for(pid, "execution_interrupted")
    assert mp4s_on_disk(server) == before
    assert not list((server.base / "output").rglob("*partial*"))
    after, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE,
                          Magic141SaveMP4={"filename_prefix": "after_interrupt"})
    assert server.wait(server.queue(after))["status"]["status_str"] == "success"


def test_cancel_at_the_template_size_ends_the_prompt_within_5_s(server, object_info):
    """The shipped image-to-video template at the official size (540p, 81 frames: one sampler step is minutes on a
    CPU; the template's "auto" would make the draft here): a cancel in the middle of the first transformer forward
    ends the prompt within seconds, not at the step's end (see `cancel_inside` for how that is measured)."""
    prompt, _ = api_prompt(server, object_info, "image_to_video", Magic141Sampler={"seed": 11},
                           Magic141SaveMP4={"filename_prefix": "cancelled"},
                           Magic141ImageToVideo={"resolution": "540p"})
    cancel_inside(server, server.queue(prompt), node_id(prompt, "Magic141Sampler"), "540p x 81 frames", settle_s=3,
                  limit_s=600)


CANCEL_CPU_S = 10.0  # "within 5 s" on 2 cores, counted in the server's CPU seconds: the work done after the cancel
CANCEL_HANG_S = 120  # wall time, only to tell a cancel that never lands (the work left: many minutes) from a slow one


def cancel_inside(server, pid: str, node: str, what: str, settle_s: float, limit_s: float) -> None:
    """Wait until `node` of prompt `pid` runs, `settle_s` more, then /interrupt; the prompt must end interrupted
    (status error) after at most CANCEL_CPU_S of the server's CPU time. CPU time, not wall time: it counts the work
    done before the next interrupt check (measured 0.5-2 s of CPU), which a loaded machine does not change, where
    it stretches wall time several-fold. A cancel that missed the check would go on for minutes of CPU."""
    deadline = time.time() + limit_s
    while not any(m["data"].get("node") == node for m in server.messages_for(pid, "executing")):
        assert time.time() < deadline, f"node {node} never started"
        assert not server.messages_for(pid, "execution_error"), server.messages_for(pid, "execution_error")
        time.sleep(0.05)
    time.sleep(settle_s)
    sent, cpu = time.time(), server.cpu_seconds()
    server.post("/interrupt", {})
    history = server.wait(pid, timeout=CANCEL_HANG_S)
    waited, worked = time.time() - sent, server.cpu_seconds() - cpu
    print(f"cancel at {what}: prompt ended {waited:.2f} s after /interrupt, {worked:.2f} s of the server's CPU")
    assert any(m["type"] == "execution_interrupted" for m in server.messages_for(pid))
    assert history["status"]["status_str"] == "error"
    assert worked < CANCEL_CPU_S, f"the prompt ran {worked:.1f} CPU-s ({waited:.1f} s) after /interrupt"


def test_cancel_during_the_decode_at_the_template_size_ends_the_prompt_within_5_s(server):
    """Magic141 VAE Decode of a 540p x 81-frame latent (the templates' size; the demo VAE is the full-size one, whose
    decode takes minutes on a CPU): a cancel in the middle of it ends the prompt within seconds."""
    # 5 s: past building the decoder from the native VAE's weights, inside the first chunk
    cancel_inside(server, server.queue(decode_prompt(960, 544, 81)), "3", "the VAE decode of 540p x 81 frames",
                  settle_s=5, limit_s=300)


@pytest.mark.parametrize("overrides, message", [
    ({"Magic141ImageToVideo": {**CPU_SIZE, "length": 8}}, "length must be 4k\\+1 frames, got 8; use 5 or 9"),
    ({"Magic141ImageToVideo": {**CPU_SIZE, "width": 72}}, "width must be a positive multiple of 16, got 72"),
])
def test_bad_values_get_actionable_errors(server, object_info, overrides, message):
    prompt, _ = api_prompt(server, object_info, "image_to_video", **overrides)
    import re

    assert re.search(message, error_of(server, prompt))


def test_a_vae_file_chosen_as_the_model_is_named(server, object_info):
    folder, name = DEMO_FILES["vae"]
    shutil.copy(server.base / "models" / folder / name, server.base / "models" / "diffusion_models" / "oops_vae.safetensors")
    prompt, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE,
                           Magic141ModelLoader={"model_name": "oops_vae.safetensors"})
    assert "oops_vae.safetensors is not a Magic141 / HunyuanVideo transformer: it looks like a VAE" in \
        error_of(server, prompt)


def test_wrong_wiring_is_rejected_before_running(server, object_info):
    prompt, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE)
    sampler, loader = node_id(prompt, "Magic141Sampler"), node_id(prompt, "VAELoader")
    prompt[sampler]["inputs"]["latent"] = [loader, 0]  # a VAE where the sampler wants a LATENT
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": server.client_id})
    assert status == 400
    errors = body["node_errors"][sampler]["errors"]
    assert errors[0]["type"] == "return_type_mismatch" and "LATENT" in errors[0]["details"]


def test_twenty_queued_prompts_survive_an_interrupt_in_the_middle(server, object_info):
    small = {"resolution": "custom", "width": 32, "height": 32, "length": 5}
    before = mp4s_on_disk(server)
    pids = []
    for i in range(20):
        prompt, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=small,
                               Magic141Sampler={"seed": 1000 + i, "steps": 40 if i == 7 else 2},
                               Magic141SaveMP4={"filename_prefix": f"queue/q{i:02d}"})
        pids.append(server.queue(prompt))
    sampler = node_id(prompt, "Magic141Sampler")
    deadline = time.time() + 600
    while not any(m["data"]["node"] == sampler for m in server.messages_for(pids[7], "progress")):
        assert time.time() < deadline, "prompt 8 never started sampling"
        start = time.time()
        server.get("/system_stats")  # the server answers while it works through the queue
        assert time.time() - start < 15  # about 0.01 s quiet; the bound holds at load 18 on 2 cores
        time.sleep(0.1)
    status, _ = server.post("/interrupt", {"prompt_id": pids[7]})
    assert status == 200
    results = [server.wait(pid)["status"]["status_str"] for pid in pids]
    assert results == ["success"] * 7 + ["error"] + ["success"] * 12
    new = mp4s_on_disk(server) - before
    assert len(new) == 19 and not any("q07" in str(p) for p in new)
    assert not [p for p in (server.base / "output").rglob("*") if ".partial" in p.name]


def _hostile_dit(server, name: str) -> str:
    """A copy of the demo transformer made hostile (issue 20): a crafted block index, NaN weights, or a config that
    is not JSON. Returns its file name in models/diffusion_models."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder, demo = DEMO_FILES["dit"]
    with safe_open(str(server.base / "models" / folder / demo), "pt") as f:
        sd, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    if name == "block index 100000000":
        sd["double_blocks.100000000.img_mod.linear.weight"] = sd["double_blocks.0.img_mod.linear.weight"].clone()
    elif name == "NaN weights":
        sd["single_blocks.1.linear1.weight"] = sd["single_blocks.1.linear1.weight"] * float("nan")
    else:
        meta = {k: "{not json" if k == "magic141_dit_config" else v for k, v in meta.items()}
    filename = f"hostile_{name.replace(' ', '_')}.safetensors"
    save_file(sd, str(server.base / "models" / folder / filename), metadata=meta)
    return filename


@pytest.mark.parametrize("name, message", [
    ("block index 100000000", "tensor 'double_blocks.100000000.img_mod.linear.weight' names double_blocks block "
                              "100000000"),
    ("NaN weights", "tensor 'single_blocks.1.linear1.weight' holds NaN or infinite values"),
    ("config not JSON", "config field 'magic141_dit_config' is not valid JSON"),
])
def test_a_hostile_checkpoint_is_refused_at_once_and_the_server_goes_on(server, object_info, name, message):
    filename = _hostile_dit(server, name)
    prompt, _ = api_prompt(server, object_info, "image_to_video", Magic141ImageToVideo=CPU_SIZE,
                           Magic141ModelLoader={"model_name": filename})
    loader = node_id(prompt, "Magic141ModelLoader")
    pid = server.queue(prompt)
    started = deadline = None
    while True:  # the server's CPU time from the loader starting to its error, as the websocket reports them
        messages = server.messages_for(pid)
        if started is None and any(m["type"] == "executing" and m["data"].get("node") == loader for m in messages):
            started = server.cpu_seconds()
        errors = [m["data"] for m in messages if m["type"] == "execution_error"]
        if errors:
            refused_after = server.cpu_seconds() - started
            break
        deadline = deadline or time.time() + 300
        assert time.time() < deadline, "the hostile file was never refused"
        time.sleep(0.005)
    assert errors[0]["node_id"] == loader and message in errors[0]["exception_message"]
    assert filename in errors[0]["exception_message"]
    if name != "NaN weights":  # refused from the names and the metadata alone, before any weight is read
        assert refused_after < 2.0  # CPU seconds (load-independent); building the claimed model would take hours
    server.get("/system_stats")  # the server goes on answering
    after, _ = api_prompt(server, object_info, "image_to_video",
                          Magic141ImageToVideo={"resolution": "custom", "width": 32, "height": 32, "length": 5})
    assert server.wait(server.queue(after))["status"]["status_str"] == "success"


def test_an_image_link_pointing_out_of_input_is_never_retrieved(server, object_info, tmp_path):
    private = tmp_path / "private.png"
    Image.fromarray(np.full((90, 120, 3), 200, dtype=np.uint8)).save(private)
    linked = server.base / "input" / "linked_priors"
    linked.mkdir(exist_ok=True)
    (linked / "leak.png").unlink(missing_ok=True)
    (linked / "leak.png").symlink_to(private)
    prompt, _ = api_prompt(server, object_info, "retrieval_prior_to_video", Magic141ImageToVideo=CPU_SIZE,
                           Magic141RetrievePrior={"folder": "input/linked_priors"})
    message = error_of(server, prompt)  # the link is the folder's only image: nothing left to index or return
    assert "the index of" in message and "linked_priors is empty" in message
