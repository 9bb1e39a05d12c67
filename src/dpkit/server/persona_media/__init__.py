"""The persona's media, drawn and spoken by the server: its face, its voice, and their tracks."""
