"""The client's media: the user's devices (capture, files, synthetic), pacing and level meters.

Everything that produces frames is an aiortc ``MediaStreamTrack`` paced in real time by a
:class:`~dpkit.media.clock.MediaClock`. The persona's own face and voice are the server's, in
``dpkit.server.persona_media``; nothing here imports the server.
"""
