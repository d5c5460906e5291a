"""Libraries the stages share, apart from the five stage packages: faces (detections, landmarks,
tracking, pose), fonts (which installed font covers a script), subtitles (cues from words, SRT/VTT).
They import no stage package (tests/test_layers.py)."""
