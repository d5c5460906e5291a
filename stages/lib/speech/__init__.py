"""Speech: recognition (Whisper), alignment (pocketsphinx), one timing per clip, synthesis (Piper,
eSpeak NG) and text as it should be spoken."""
