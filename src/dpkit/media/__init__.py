"""Media for dpkit sessions: the persona's face and voice, synthetic devices, and level meters.

Everything that produces frames is an aiortc ``MediaStreamTrack`` paced in real time by a
:class:`MediaClock`; the drawing and the measuring underneath are plain numpy.
"""

from dpkit.media.clock import MediaClock
from dpkit.media.face import FacePose, FaceRenderer
from dpkit.media.levels import SILENCE_DBFS, audio_frame_to_mono, rms_dbfs
from dpkit.media.persona_audio import PersonaAudioTrack, room_tone
from dpkit.media.persona_video import PersonaVideoTrack
from dpkit.media.synthetic import TestPatternVideoTrack, ToneAudioTrack, read_frame_index

__all__ = [
    "SILENCE_DBFS",
    "FacePose",
    "FaceRenderer",
    "MediaClock",
    "PersonaAudioTrack",
    "PersonaVideoTrack",
    "TestPatternVideoTrack",
    "ToneAudioTrack",
    "audio_frame_to_mono",
    "read_frame_index",
    "rms_dbfs",
    "room_tone",
]
