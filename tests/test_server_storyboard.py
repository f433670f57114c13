"""Issue 30 on a ./run.sh server: the "Long video storyboard" template (shots retrieved for its [cut] line, the
report node judging its seams), then a re-roll of its last window through Long Video's resume input, and a resume
path outside the output folder refused. Demo models, 64 x 48, 5-frame windows."""

from __future__ import annotations

import json

from run_sh_server import api_prompt, error_of, mp4s_on_disk, node_id, outputs_mp4

from magic141_core.video.mp4 import read_mp4

SHRUNK = {"resolution": "custom", "width": 64, "height": 48, "window_length": 5, "context_frames": 1,
          "filename_prefix": "Magic141/storyboard_test"}


def test_storyboard_template_retrieves_its_shots_reports_and_rerolls(server, object_info):
    prompt, ui = api_prompt(server, object_info, "long_video_storyboard", Magic141LongVideo=SHRUNK,
                            Magic141LongVideoReport={"window_length": 5, "context_frames": 1})
    long_node, report = node_id(prompt, "Magic141LongVideo"), node_id(prompt, "Magic141LongVideoReport")
    pid = server.queue(prompt, extra_pnginfo={"workflow": ui})
    history = server.wait(pid)
    assert history["status"]["status_str"] == "success", history["status"]
    (video,) = outputs_mp4(server, history)
    frames = read_mp4(video)[0]
    assert frames.shape == (5 + 4 + 5 + 4, 48, 64, 3)  # window 3 is a cut: all its 5 frames are new
    sidecar = video.with_suffix(".m141")
    record = json.loads((sidecar / "record.json").read_text())["record"]
    assert [w["cut"] for w in record["windows"]] == [False, False, True, False]
    # the cut line names a lighthouse: a theme word of the warm demo prior for the hand-set demo CLIP
    assert record["shots"]["2"].split(" ")[:2] == ["retrieved", "dawn_harbour.png"]
    verdict = history["outputs"][report]["text"][0]
    assert verdict.startswith("Seams: ") and "over 2" in verdict  # windows 2 and 4 follow seams; 3 is a cut
    assert verdict in server.log()  # progress.show_text: logged and sent as the node's text

    # re-roll the last window: windows 1-3 come from the sidecar (their frames bit for bit), one window renders
    reroll = json.loads(json.dumps(prompt))
    relative = sidecar.relative_to(server.base / "output").as_posix()
    reroll[long_node]["inputs"] |= {"resume": relative, "from_window": 4, "seed": 40}
    pid = server.queue(reroll)
    history = server.wait(pid)
    assert history["status"]["status_str"] == "success", history["status"]
    (again,) = outputs_mp4(server, history)
    assert again != video and (read_mp4(again)[0][:14] == frames[:14]).all()
    progress = [m["data"]["max"] for m in server.messages_for(pid, "progress") if m["data"]["node"] == long_node]
    assert progress and set(progress) == {4}  # one window's 4 steps
    record = json.loads((again.with_suffix(".m141") / "record.json").read_text())["record"]
    assert [w["seed"] for w in record["windows"]] == [39, 39, 39, 40]

    before = mp4s_on_disk(server)
    reroll[long_node]["inputs"]["resume"] = "../input"
    assert "resume '../input' must be a path inside the output folder" in error_of(server, reroll)
    assert mp4s_on_disk(server) == before
