"""Speech-to-text engines behind the :class:`callpipe.transcripts.Transcriber` port."""
