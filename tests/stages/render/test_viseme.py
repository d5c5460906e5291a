"""The viseme renderer: mouth shapes from audio, and the mouth warp on a photo and a cartoon."""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions, Span, SpeechTiming, Style, TimedViseme
from pipeline.errors import InvalidInput
from stages.lib.speech.align import Phone
from stages.lib.speech.fallback import rms_envelope
from stages.render.base import SAMPLE_RATE, RenderRequest
from stages.render.viseme import VisemeRenderer
from stages.render.viseme.shapes import MouthTrack, ShapeParams, Viseme, plan_mouth, viseme_of
from stages.render.viseme.timeline import plan_from_timing, rate_scale
from stages.render.viseme.warp import (
    PHOTO,
    BoxLayout,
    MouthRig,
    find_drawn_mouth,
    find_seam,
    geometry_from_landmarks,
    locate_mouth,
    looks_like_cartoon,
    shows_teeth,
)

ASSETS = Path(__file__).resolve().parents[3] / "pipeline" / "assets"
TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
FPS = 25.0


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, FaceFrame]:
    """The astronaut photo (RGB) and its face box from OpenCV's Haar cascade (stand-in for detect)."""
    image = cv2.cvtColor(np.asarray(cv2.imread(str(ASSETS / "astronaut.png"))), cv2.COLOR_BGR2RGB)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
    faces = cascade.detectMultiScale(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(60, 60))
    x, y, w, h = max(faces, key=lambda b: b[2] * b[3])
    assert 150 < x < 200 and 40 < y < 90, "the Haar box should sit on the astronaut's face"
    return image, FaceFrame(box=(float(x), float(y), float(x + w), float(y + h)))


def draw_cartoon(size: int = 384) -> tuple[np.ndarray, FaceFrame]:
    """A flat-colour cartoon head (ellipse, eyes, a smiling mouth line) and a hand-made face box."""
    image = np.full((size, size, 3), (120, 180, 230), np.uint8)
    c = size // 2
    axes = (int(size * 0.28), int(size * 0.34))
    cv2.ellipse(image, (c, c), axes, 0, 0, 360, (250, 215, 185), -1, cv2.LINE_AA)
    cv2.ellipse(image, (c, c), axes, 0, 0, 360, (40, 30, 30), 3, cv2.LINE_AA)
    for side in (-1, 1):
        eye = (c + side * int(size * 0.1), c - int(size * 0.06))
        cv2.ellipse(
            image, eye, (int(size * 0.04), int(size * 0.055)), 0, 0, 360, (255, 255, 255), -1, cv2.LINE_AA
        )
        cv2.circle(image, (eye[0], eye[1] + 4), int(size * 0.022), (30, 30, 40), -1, cv2.LINE_AA)
    mouth = (c, c + int(size * 0.17))
    cv2.ellipse(image, mouth, (int(size * 0.08), int(size * 0.025)), 0, 10, 170, (60, 20, 30), 3, cv2.LINE_AA)
    box = (c - size * 0.28, c - size * 0.3, c + size * 0.28, c + size * 0.3)
    return image, FaceFrame(box=box)


def still(image: np.ndarray, face: FaceFrame, n: int) -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
    """A still avatar: the same array every frame, as the render stage hands it over."""
    for i in range(n):
        yield i, image, face


def request_for(
    audio: np.ndarray, image: np.ndarray, face: FaceFrame, transcript: str | None, style: Style = Style.auto
) -> RenderRequest:
    n = math.ceil(len(audio) / SAMPLE_RATE * FPS)
    track = FaceTrack(detector="test", width=image.shape[1], height=image.shape[0], fps=FPS, frames=[face])
    return RenderRequest(audio, FPS, n, track, JobOptions(transcript=transcript), style)


def lower_face(face: FaceFrame, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The lower face: the box's lower half and the chin below it, a little wider than the box."""
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    rows = slice(int(y1 + 0.5 * h), min(int(y2 + 0.5 * h), shape[0]))
    return rows, slice(max(int(x1 - 0.15 * w), 0), min(int(x2 + 0.15 * w), shape[1]))


def tone(seconds: float, amplitude: float, start: float = 0.0, total: float = 2.0) -> np.ndarray:
    """A 200 Hz tone with harmonics (voice-like) from ``start`` for ``seconds`` inside ``total`` s."""
    t = np.arange(int(total * SAMPLE_RATE)) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * 200 * k * t) / k for k in range(1, 6))
    on = (t >= start) & (t < start + seconds)
    return (amplitude * voice * on / 2.3).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------


def test_phones_map_to_rhubarb_visemes() -> None:
    """m/b/p close, aa opens wide, uw/ow/w round, f/v tuck the lip, unknown phones are consonant-like."""
    assert {viseme_of(p) for p in ("M", "B", "P")} == {Viseme.A}
    assert viseme_of("AA") == Viseme.D and viseme_of("AA1") == Viseme.D
    assert {viseme_of(p) for p in ("UW", "OW", "W")} == {Viseme.F}
    assert viseme_of("F") == Viseme.G and viseme_of("+NSN+") == Viseme.B


def test_silence_keeps_the_mouth_closed() -> None:
    """Silent audio gives a closed mouth on every frame, with phones or without."""
    silence = np.zeros(2 * SAMPLE_RATE, np.float32)
    for phones in (None, [Phone("AA", 0.2, 1.5)]):
        track = plan_mouth(silence, SAMPLE_RATE, FPS, 50, phones)
        assert len(track) == 50 and np.all(track.open == 0) and np.all(track.round == 0)


def test_loud_vowel_opens_and_quiet_frames_rest() -> None:
    """A loud "aa" opens the mouth wide while it sounds; before it the mouth is closed, and it closes
    again within a few frames after."""
    audio = tone(0.6, 0.5, start=0.4)
    track = plan_mouth(audio, SAMPLE_RATE, FPS, 50, [Phone("AA", 0.4, 1.0)])
    assert track.open[20] > 0.7
    assert np.all(track.open[:8] == 0)
    assert track.open[30] < 0.1


def test_loudness_scales_the_opening() -> None:
    """The same vowel opens less when spoken quietly (within the same clip)."""
    audio = tone(0.5, 0.5, start=0.2) + tone(0.5, 0.08, start=1.2)
    track = plan_mouth(audio, SAMPLE_RATE, FPS, 50, [Phone("AA", 0.2, 0.7), Phone("AA", 1.2, 1.7)])
    assert track.open[14] > track.open[39] + 0.2 > 0.2


def test_bilabials_close_the_mouth_between_vowels() -> None:
    """In "aa m aa" with a continuous voice, the mouth shuts on the m and is open on both vowels."""
    audio = tone(1.2, 0.5, start=0.3)
    phones = [Phone("AA", 0.3, 0.7), Phone("M", 0.7, 0.8), Phone("AA", 0.8, 1.5)]
    track = plan_mouth(audio, SAMPLE_RATE, FPS, 50, phones, ShapeParams(lead=0.0))
    assert track.open[int(0.75 * FPS)] < 0.1
    assert track.open[int(0.65 * FPS)] > 0.5 and track.open[int(1.2 * FPS)] > 0.5


def test_rounded_vowels_round_and_wide_vowels_widen() -> None:
    """ "oo" purses the lips (round), "ee" spreads them (wide)."""
    audio = tone(1.6, 0.5, start=0.2)
    phones = [Phone("UW", 0.2, 0.9), Phone("IY", 1.0, 1.8)]
    track = plan_mouth(audio, SAMPLE_RATE, FPS, 50, phones)
    assert track.round[18] > 0.8 and track.wide[18] < 0.1
    assert track.wide[40] > 0.3 and track.round[40] < 0.1


def test_energy_only_follows_loudness() -> None:
    """Without phones the opening follows loudness: open in bursts, closed between them."""
    audio = tone(0.3, 0.5, start=0.2) + tone(0.3, 0.5, start=1.2)
    track = plan_mouth(audio, SAMPLE_RATE, FPS, 50, None)
    assert track.open[10] > 0.5 and track.open[35] > 0.5
    assert track.open[22] < 0.05 and track.open[47] < 0.05


# --------------------------------------------------------------------------------------------------
# Locating the mouth
# --------------------------------------------------------------------------------------------------


def test_lip_seam_is_found_in_the_photo(astronaut: tuple[np.ndarray, FaceFrame]) -> None:
    """On the astronaut the seam lands between upper and lower lip (her teeth), y ≈ 146 px."""
    image, face = astronaut
    geometry = locate_mouth(face, BoxLayout(), find_seam(image, face.box, BoxLayout()))
    assert 141 < geometry.cy < 151 and abs(geometry.cx - 224) < 6


def test_landmarks_give_position_size_and_roll() -> None:
    """With 68 landmarks the mouth centre, half-width and roll come from the lip points."""
    points = np.zeros((68, 2))
    angle = math.radians(10)
    axis, normal = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
    centre = np.array([200.0, 300.0])
    points[48], points[54] = centre - 40 * axis, centre + 40 * axis
    points[60:68] = centre
    points[33], points[8] = centre - 45 * normal, centre + 70 * normal
    points[5], points[11] = centre - 80 * axis + 40 * normal, centre + 80 * axis + 40 * normal
    g = geometry_from_landmarks(points)
    assert (g.cx, g.cy) == pytest.approx((200, 300)) and g.half_width == pytest.approx(40)
    assert g.angle == pytest.approx(angle) and g.up == pytest.approx(45) and g.down == pytest.approx(70)


def test_landmarks_steer_the_warp_on_a_tilted_face(astronaut: tuple[np.ndarray, FaceFrame]) -> None:
    """On a face rolled by 15° with landmarks, the opening darkens the mouth along its tilted seam:
    dark just below the seam centre, and the change is centred on the mouth's tilted axis."""
    image, _ = astronaut
    points = np.full((68, 2), (224.0, 120.0))
    points[48], points[54], points[60:68] = (203, 146), (245, 144), (224, 146)
    points[33], points[8], points[5], points[11] = (223, 131), (224, 172), (188, 158), (262, 156)
    turn = cv2.getRotationMatrix2D((224, 140), 15, 1.0)
    tilted = cv2.warpAffine(image, turn, (512, 512), borderMode=cv2.BORDER_REFLECT)
    marks = np.c_[points, np.ones(68)] @ turn.T
    face = FaceFrame(box=(170.0, 60.0, 280.0, 180.0), landmarks=[(float(x), float(y)) for x, y in marks])
    geometry = locate_mouth(face, BoxLayout())
    assert geometry.angle == pytest.approx(math.atan2(-2, 42) - math.radians(15))  # corners 2 px off level
    opened = MouthRig(geometry, tilted.shape[:2], PHOTO).apply(tilted, (1.0, 0.0, 0.0))
    changed = np.argwhere(np.any(opened != tilted, axis=2))
    dy, dx = changed.mean(axis=0) - (geometry.cy, geometry.cx)
    along = math.cos(geometry.angle) * dx + math.sin(geometry.angle) * dy
    across = -math.sin(geometry.angle) * dx + math.cos(geometry.angle) * dy
    assert abs(along) < 6 and 0 < across < geometry.down  # centred on the mouth, the jaw pulls it down
    below = np.array([geometry.cx, geometry.cy]) + 3 * np.array(
        [math.sin(-geometry.angle), math.cos(geometry.angle)]
    )
    x, y = (round(c) for c in below)
    assert opened[y - 1 : y + 2, x - 3 : x + 4].mean() < 90


def test_style_guess_tells_drawings_from_photos(astronaut: tuple[np.ndarray, FaceFrame]) -> None:
    """Flat-colour drawings count as cartoons, the photo does not."""
    image, face = astronaut
    cartoon, cartoon_face = draw_cartoon()
    as_ints = [int(v) for v in face.box]
    assert not looks_like_cartoon(image, (as_ints[0], as_ints[1], as_ints[2], as_ints[3]))
    x1, y1, x2, y2 = (int(v) for v in cartoon_face.box)
    assert looks_like_cartoon(cartoon, (x1, y1, x2, y2))


def test_visible_teeth_are_detected(astronaut: tuple[np.ndarray, FaceFrame]) -> None:
    """The smiling astronaut shows teeth at the seam (so none get painted); the drawn mouth does not."""
    image, face = astronaut
    assert shows_teeth(image, locate_mouth(face, BoxLayout(), find_seam(image, face.box, BoxLayout())))
    cartoon, cartoon_face = draw_cartoon()
    seam = find_seam(cartoon, cartoon_face.box, BoxLayout())
    assert not shows_teeth(cartoon, locate_mouth(cartoon_face, BoxLayout(), seam))


def test_warp_changes_only_its_crop_and_leaves_no_edge(astronaut: tuple[np.ndarray, FaceFrame]) -> None:
    """An open mouth changes pixels only strictly inside the rig's crop: the crop's border rows and
    columns are untouched, so no box edge can show; a closed shape changes nothing at all."""
    image, face = astronaut
    rig = MouthRig(locate_mouth(face, BoxLayout()), image.shape[:2], PHOTO)
    opened = rig.apply(image, (1.0, 0.3, 0.0))
    changed = np.any(opened != image, axis=2)
    x1, y1, x2, y2 = rig.box
    assert changed.sum() > 300
    assert not changed[:y1].any() and not changed[y2:].any()
    assert not changed[:, :x1].any() and not changed[:, x2:].any()
    border = np.concatenate(
        [changed[y1, x1:x2], changed[y2 - 1, x1:x2], changed[y1:y2, x1], changed[y1:y2, x2 - 1]]
    )
    assert not border.any()
    assert np.array_equal(rig.apply(image, (0.0, 0.0, 0.0)), image)


def test_open_mouth_is_dark_inside(astronaut: tuple[np.ndarray, FaceFrame]) -> None:
    """Opening the mouth darkens the middle of the mouth (the interior shows between the lips)."""
    image, face = astronaut
    geometry = locate_mouth(face, BoxLayout(), find_seam(image, face.box, BoxLayout()))
    opened = MouthRig(geometry, image.shape[:2], PHOTO).apply(image, (1.0, 0.0, 0.0))
    cx, cy, a = int(geometry.cx), int(geometry.cy), int(geometry.half_width)
    centre = (slice(cy + 1, cy + a // 4), slice(cx - a // 3, cx + a // 3))
    assert opened[centre].mean() < 0.5 * image[centre].mean()


# --------------------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------------------


def test_photo_mouth_follows_loudness_and_the_rest_is_unchanged(
    jfk: np.ndarray, astronaut: tuple[np.ndarray, FaceFrame]
) -> None:
    """Acceptance: astronaut + JFK. The lower face's change from the first frame correlates with the
    audio's RMS envelope (Pearson r > 0.5); outside the lower face the frames equal the photo (mean
    absolute difference < 2/255); exactly n_frames frames; the input array is not modified."""
    image, face = astronaut
    original = image.copy()
    request = request_for(jfk, image, face, TRANSCRIPT)
    frames = list(VisemeRenderer().render(request, still(image, face, request.n_frames), lambda _: None))
    assert len(frames) == request.n_frames == 275
    assert np.array_equal(image, original)
    region = lower_face(face, image.shape)
    change = [float(cv2.absdiff(f[region], frames[0][region]).mean()) for f in frames]
    bounds = np.rint(np.arange(request.n_frames + 1) * SAMPLE_RATE / FPS).astype(int)
    rms = [np.sqrt(np.mean(jfk[a:b] ** 2)) if b > a else 0.0 for a, b in pairwise(bounds)]
    r = np.corrcoef(change, rms)[0, 1]
    assert r > 0.5, f"mouth motion vs loudness r = {r:.3f}"
    inside_count = frames[0][region].size
    outside_mad = [
        (float(cv2.absdiff(f, image).sum()) - float(cv2.absdiff(f[region], image[region]).sum()))
        / (image.size - inside_count)
        for f in frames
    ]
    assert max(outside_mad) < 2.0
    assert max(change) > 3.0, "the mouth should visibly move"


def test_cartoon_renders_and_its_mouth_moves(jfk: np.ndarray) -> None:
    """A drawn cartoon face (auto style) renders every frame and its mouth region changes with speech;
    progress rises to 1."""
    image, face = draw_cartoon()
    audio = jfk[: 3 * SAMPLE_RATE]
    request = request_for(audio, image, face, "And so my fellow Americans")
    seen: list[float] = []
    frames = list(VisemeRenderer().render(request, still(image, face, request.n_frames), seen.append))
    assert len(frames) == request.n_frames == 75
    region = lower_face(face, image.shape)
    change = [np.abs(f[region].astype(np.float32) - image[region]).mean() for f in frames]
    assert max(change) > 2.0 and min(change) == 0.0
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_style_option_changes_the_drawing(jfk: np.ndarray, astronaut: tuple[np.ndarray, FaceFrame]) -> None:
    """Asking for the cartoon style on a photo opens the mouth further than the photo style."""
    image, face = astronaut
    audio = jfk[: 3 * SAMPLE_RATE]
    change = {}
    for style in (Style.photo, Style.cartoon):
        request = request_for(audio, image, face, None, style)
        renderer = VisemeRenderer(use_alignment=False)
        frames = renderer.render(request, still(image, face, request.n_frames), lambda _: None)
        change[style] = max(float(np.abs(f.astype(np.float32) - image).sum()) for f in frames)
    assert change[Style.cartoon] > 1.3 * change[Style.photo]


def test_moving_face_is_followed(jfk: np.ndarray) -> None:
    """When the face moves between frames the mouth warp moves with it (changes stay around the box)."""
    image, face = draw_cartoon()
    audio = jfk[int(1.0 * SAMPLE_RATE) : int(2.0 * SAMPLE_RATE)]
    request = request_for(audio, image, face, None)

    def shifted() -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
        for i in range(request.n_frames):
            dx = 2 * i
            moved = np.roll(image, dx, axis=1)
            x1, y1, x2, y2 = face.box
            yield i, moved, FaceFrame(box=(x1 + dx, y1, x2 + dx, y2))

    inputs = list(shifted())
    frames = list(VisemeRenderer(use_alignment=False).render(request, iter(inputs), lambda _: None))
    for (_, moved, moved_face), out in zip(inputs, frames, strict=True):
        changed = np.any(out != moved, axis=2)
        if changed.any():
            xs = np.flatnonzero(changed.any(axis=0))
            assert moved_face.box[0] - 10 <= xs.min() and xs.max() <= moved_face.box[2] + 10


def test_too_few_frames_and_bad_audio_are_refused(astronaut: tuple[np.ndarray, FaceFrame]) -> None:
    """Running out of avatar frames, stereo audio and a zero frame rate raise InvalidInput."""
    image, face = astronaut
    audio = np.zeros(SAMPLE_RATE, np.float32)
    request = request_for(audio, image, face, None)
    renderer = VisemeRenderer(use_alignment=False)
    with pytest.raises(InvalidInput, match="frames"):
        list(renderer.render(request, still(image, face, 3), lambda _: None))
    with pytest.raises(InvalidInput, match="mono"):
        renderer.render(request_for(np.zeros((2, 100), np.float32), image, face, None), [], lambda _: None)
    bad_fps = RenderRequest(audio, 0.0, 10, request.track)
    with pytest.raises(InvalidInput, match="frame rate"):
        renderer.render(bad_fps, [], lambda _: None)


def test_tiny_face_passes_frames_through(astronaut: tuple[np.ndarray, FaceFrame]) -> None:
    """A face too small to have a visible mouth leaves the frames as they are."""
    image, _ = astronaut
    face = FaceFrame(box=(10.0, 10.0, 20.0, 20.0))
    audio = tone(0.5, 0.5, start=0.1, total=1.0)
    request = request_for(audio, image, face, None)
    frames = list(VisemeRenderer(use_alignment=False).render(request, still(image, face, 25), lambda _: None))
    assert len(frames) == 25 and all(np.array_equal(f, image) for f in frames)


def test_mouth_track_length_matches_frames() -> None:
    """The plan has exactly n_frames entries even when the audio is shorter than the video."""
    track: MouthTrack = plan_mouth(tone(0.3, 0.5, total=0.5), SAMPLE_RATE, FPS, 40, None)
    assert len(track) == 40 and track.at(39) == (0.0, 0.0, 0.0)
    assert len(rms_envelope(np.zeros(100, np.float32), SAMPLE_RATE, FPS, 7)) == 7


# --------------------------------------------------------------------------------------------------
# Timeline: f/v tuck, rounding ahead of its vowel, speaking rate
# --------------------------------------------------------------------------------------------------


def _timing(visemes: list[tuple[str, float, float]], end: float) -> SpeechTiming:
    return SpeechTiming(
        duration=end,
        source="transcript",
        speech=[Span(start=visemes[0][1], end=visemes[-1][2])],
        visemes=[TimedViseme(viseme=v, start=a, end=b) for v, a, b in visemes],
    )


def test_f_and_v_tuck_the_lower_lip_in_the_plan() -> None:
    """An f (viseme G) between vowels gives a tuck near 1 on its frames and none on the vowels."""
    audio = tone(1.4, 0.5, start=0.2)
    timing = _timing([("C", 0.2, 0.6), ("G", 0.6, 0.9), ("C", 0.9, 1.4)], 2.0)
    track = plan_from_timing(audio, SAMPLE_RATE, FPS, 50, timing, ShapeParams(lead=0.0))
    assert track.tuck is not None
    assert track.tuck_at(int(0.82 * FPS)) > 0.8
    assert track.tuck_at(int(0.45 * FPS)) < 0.05 and track.tuck_at(int(1.3 * FPS)) < 0.05


def test_lips_round_ahead_of_a_rounded_vowel() -> None:
    """Coarticulation: before an "oo" (F) starts, the lips are already rounding."""
    audio = tone(1.4, 0.5, start=0.2)
    timing = _timing([("C", 0.2, 0.8), ("F", 0.8, 1.4)], 2.0)
    track = plan_from_timing(audio, SAMPLE_RATE, FPS, 50, timing, ShapeParams(lead=0.0))
    assert track.round[int(0.8 * FPS) - 1] > 0.3
    assert track.round[int(0.4 * FPS)] == 0.0


def test_fast_speech_still_opens() -> None:
    """The same open-closed alternation spoken twice as fast as usual (18 visemes a second): its
    openings are as large as the slow ones' (without rate scaling, smoothing shrinks them by a tenth)."""

    def peaks(step: float) -> float:
        spans = [
            ("D" if k % 2 == 0 else "B", 0.2 + k * step, 0.2 + (k + 1) * step) for k in range(int(1.2 / step))
        ]
        track = plan_from_timing(tone(1.4, 0.5, start=0.2), SAMPLE_RATE, FPS, 50, _timing(spans, 2.0))
        return float(np.percentile(track.open[int(0.3 * FPS) : int(1.3 * FPS)], 95))

    slow, fast = peaks(1 / 8), peaks(1 / 18)
    assert fast >= slow, (fast, slow)
    assert rate_scale(18.0)[0] > 1.0 and rate_scale(6.0) == (1.0, 1.0)


def _off_centre_cartoon(shift: int = 22) -> tuple[np.ndarray, FaceFrame, float]:
    """``draw_cartoon`` with its mouth line drawn ``shift`` px right of the box's centre; (image, face,
    the line's centre x)."""
    image, face = draw_cartoon()
    size = image.shape[0]
    c = size // 2
    mouth = (c, c + int(size * 0.17))
    cv2.ellipse(image, mouth, (int(size * 0.08) + 3, int(size * 0.025) + 4), 0, 0, 360, (250, 215, 185), -1)
    moved = (c + shift, mouth[1])
    cv2.ellipse(image, moved, (int(size * 0.08), int(size * 0.025)), 0, 10, 170, (60, 20, 30), 3, cv2.LINE_AA)
    return image, face, float(c + shift)


def test_cartoon_mouth_opens_on_the_drawn_mouth(jfk: np.ndarray) -> None:
    """A cartoon whose mouth is drawn right of the face box's centre: the opened mouth's centroid is
    within 3 px of the drawn mouth's centre, no piece of the old line is left beside the new mouth, and
    the chin outline bends as one smooth curve (no corners where the jaw's motion fades)."""
    image, face, centre = _off_centre_cartoon()
    audio = jfk[: 3 * SAMPLE_RATE]
    request = request_for(audio, image, face, "And so my fellow Americans", Style.cartoon)
    request.still = True
    frames = list(VisemeRenderer().render(request, still(image, face, request.n_frames), lambda _: None))
    widest = max(frames, key=lambda f: float(np.abs(f.astype(int) - image).sum()))
    pixels = widest.astype(int)
    inside = (pixels[..., 0] - pixels[..., 1] > 30) & (pixels[..., 1] < 90)  # the dark-red opening
    _, xs = np.nonzero(inside)
    assert len(xs) > 300 and abs(xs.mean() - centre) <= 3.0, (xs.mean(), centre)
    drawn = find_drawn_mouth(image, face.box, BoxLayout())
    assert drawn is not None and abs(drawn.cx - centre) < 2
    line = drawn.mask > 0
    opening = cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    still_line = np.abs(pixels - (60, 20, 30)).sum(axis=2) < 60
    assert (still_line & line & ~opening).sum() == 0
    outline = np.abs(pixels - (40, 30, 30)).sum(axis=2) < 80
    bottom = np.array(
        [np.flatnonzero(outline[:, x]).max() for x in range(image.shape[1]) if outline[:, x].any()]
    )
    k = 8  # the chin stays convex: no second difference over 8 px bends the wrong way (1 px: rasterizing)
    bend = bottom[2 * k :] - 2 * bottom[k:-k] + bottom[: -2 * k]
    assert bend.max() <= 1.5, bend.max()  # a chin moving fully over 0.6 of the jaw, then fading: 3 px
    rows = range(int(face.box[1] + 0.5 * (face.box[3] - face.box[1])), int(bottom.max()) - 10)
    for frame in frames:  # the near cheek stays convex too, on every shape (wide ones pull the corners)
        edge = np.abs(frame.astype(int) - (40, 30, 30)).sum(axis=2) < 80
        right = np.array([np.flatnonzero(edge[y]).max() for y in rows])
        assert (right[2 * k :] - 2 * right[k:-k] + right[: -2 * k]).max() <= 2.0  # corners reaching it: 5
