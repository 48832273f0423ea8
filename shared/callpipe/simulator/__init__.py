"""A CallRail API v3 simulator, for the local stack and the tests, with real spoken demo calls.

It serves the same paths, authentication and JSON shapes as ``https://api.callrail.com/v3``
(``SimulatorServer(...).url + "/v3"`` is a client's base URL), signed short-lived
recording links pointing back at itself, per-account rate limiting answering 429 with
``Retry-After``, and per-call fault injection. ``/_sim/...`` endpoints control it.

Data directory (``--data-dir`` or ``CALLRAIL_SIM_DATA_DIR``; the default is the demo
calls shipped in ``demo_calls/``)::

    <data_dir>/calls/<CALL_ID>.json     one call: the API's call object with every field
    <data_dir>/calls/<audio file>       its recording (.mp3 or .wav), next to the JSON

A call file is the object ``GET /v3/a/{account}/calls/{id}.json?fields=<all>`` returns:
``id`` ("CAL…"), ``account_id`` (which account serves it; required), ``start_time``
(ISO-8601 with an offset; required), ``duration`` (int), ``recording`` (the API's
recording.json URL, or null), ``recording_duration``, ``recording_player``, the customer
and tracking fields, and any optional field (``transcription``, ``sentiment``, ``tags``,
``company_id``...). It also holds one simulator-only key the API never returns::

    "_simulator": {
      "audio": "<file name in the same folder>" | null,   # null: the call has no recording
      "faults": {...},            # see callpipe.simulator.faults.Faults (default: none)
      "script": [{"speaker": "agent" | "caller", "text": "...", "start": 0.6, "end": 4.2}],
      "labels": {...},            # the expected analysis (intent, project_type, spam...)
      ...                         # other keys are kept and ignored (title, audio_format)
    }

The API derives ``recording`` from ``_simulator.audio``: a link to this simulator's
recording.json when the audio file exists (and no "missing" fault), else null (and then
``recording_duration`` and ``recording_player`` are null too). Files are re-read when they
change: drop a file in and it is served on the next request. ``GET /_sim/calls`` lists
what loaded and why any file was skipped.
"""

from __future__ import annotations

from pathlib import Path

DEMO_CALLS_DIR = Path(__file__).resolve().parent / "demo_calls"
DATA_DIR_ENV = "CALLRAIL_SIM_DATA_DIR"

__all__ = ["DATA_DIR_ENV", "DEMO_CALLS_DIR"]
