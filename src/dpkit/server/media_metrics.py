"""``/metrics`` lines for the persona's media: what is encoded once for all, what per session."""

from __future__ import annotations

from dpkit.server.persona_media.broadcast import BroadcastStats


def render_media_metrics(stats: BroadcastStats) -> str:
    """The broadcast's counters and gauges in the Prometheus text format."""
    frames = (
        ("video", "shared", stats.shared_video_frames),
        ("video", "own", stats.own_video_frames),
        ("audio", "shared", stats.shared_audio_frames),
        ("audio", "own", stats.own_audio_frames),
    )
    lines = [
        "# HELP dpkit_media_encoded_frames_total Persona frames encoded: once for every idle "
        "session (shared) or for one speaking session (own).",
        "# TYPE dpkit_media_encoded_frames_total counter",
        *(
            f'dpkit_media_encoded_frames_total{{kind="{kind}",encoder="{encoder}"}} {count}'
            for kind, encoder, count in frames
        ),
        "# HELP dpkit_media_shared_keyframes_total Keyframes of the shared video stream.",
        "# TYPE dpkit_media_shared_keyframes_total counter",
        f"dpkit_media_shared_keyframes_total {stats.shared_video_keyframes}",
        "# HELP dpkit_media_video_sessions Sessions sending persona video, by where it comes from.",
        "# TYPE dpkit_media_video_sessions gauge",
        f'dpkit_media_video_sessions{{source="shared"}} {stats.video_on_shared}',
        f'dpkit_media_video_sessions{{source="own"}} {stats.video_on_own}',
        "# HELP dpkit_media_encoding_worker_starts_total Encoding worker processes started: "
        "one at start-up, one more each time a worker died.",
        "# TYPE dpkit_media_encoding_worker_starts_total counter",
        f"dpkit_media_encoding_worker_starts_total {stats.worker_starts}",
    ]
    return "\n".join(lines) + "\n"
