"""Faces in frames, shared by the detect stage and the quality report: detections, 68-point landmarks
(dlib), tracking across frames and cuts, One Euro smoothing, head pose. Pure analysis on frames: no
storage, no stage code."""
