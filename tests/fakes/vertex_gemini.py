"""A local HTTP fake of Vertex AI's ``generateContent``, for testing the Gemini adapter with
the real ``google-genai`` client.

It serves ``POST /{v1|v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent``
on 127.0.0.1 (a free port), records every request, checks it the way the service would
(and a little more: what our adapter must always send), and answers from a per-test script
of canned replies in the real REST shapes:

- success: ``candidates[].content.parts[].text``, ``finishReason``, ``usageMetadata``
  (``promptTokenCount``, ``candidatesTokenCount``, ``thoughtsTokenCount``…), ``modelVersion``;
- refusals: ``promptFeedback.blockReason`` with no candidates, or a candidate with
  ``finishReason: SAFETY`` and blocked ``safetyRatings`` but no content;
- errors in Google's format: ``{"error": {"code", "message", "status"}}``.

Checks, each answered like the service answers them (so the client sees a real error):
no ``Authorization: Bearer`` header → 401 UNAUTHENTICATED; another project or location → 403
PERMISSION_DENIED; a model not in ``models`` → 404 NOT_FOUND ("Publisher Model … was not
found"); a body that is not JSON, has field names Vertex does not know (proto JSON is strict),
no ``contents``, no ``systemInstruction``, no ``responseMimeType: application/json`` with a
``responseSchema`` → 400 INVALID_ARGUMENT. A rejected request is recorded with its reason and
does not consume a scripted reply.

Usage::

    with VertexGeminiFake() as fake:
        fake.script(analysis_reply({...}), error_reply(503))
        client = fake.client()            # genai.Client(vertexai=True) aimed at the fake
        ...
        fake.requests[0].body["generationConfig"]["responseSchema"]
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

_PATH = re.compile(
    r"^/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):generateContent$"
)

# Field names Vertex knows (v1/v1beta1 proto JSON). An unknown name is a 400 there, so it is
# one here: it catches an SDK or adapter change that sends something the service would refuse.
_REQUEST_FIELDS = frozenset(
    {
        "contents",
        "systemInstruction",
        "cachedContent",
        "tools",
        "toolConfig",
        "labels",
        "safetySettings",
        "generationConfig",
        "modelArmorConfig",
    }
)
_GENERATION_CONFIG_FIELDS = frozenset(
    {
        "temperature",
        "topP",
        "topK",
        "candidateCount",
        "maxOutputTokens",
        "stopSequences",
        "responseLogprobs",
        "logprobs",
        "presencePenalty",
        "frequencyPenalty",
        "seed",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "routingConfig",
        "modelConfig",
        "audioTimestamp",
        "responseModalities",
        "mediaResolution",
        "speechConfig",
        "thinkingConfig",
        "enableAffectiveDialog",
        "imageConfig",
    }
)
_SCHEMA_FIELDS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "default",
        "items",
        "minItems",
        "maxItems",
        "enum",
        "properties",
        "propertyOrdering",
        "required",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "additionalProperties",
        "ref",
        "defs",
    }
)
_SCHEMA_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
_CONTENT_FIELDS = frozenset({"role", "parts"})
_PART_FIELDS = frozenset(
    {
        "text",
        "inlineData",
        "fileData",
        "functionCall",
        "functionResponse",
        "executableCode",
        "codeExecutionResult",
        "thought",
        "thoughtSignature",
        "videoMetadata",
    }
)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


def _field(obj: dict[str, Any], camel: str) -> Any:
    """A field by its JSON name, whichever of the two proto JSON spellings the client used."""
    if camel in obj:
        return obj[camel]
    snake = re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()
    return obj.get(snake)


# --- scripted replies ------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One canned HTTP answer. ``delay`` seconds before answering (to provoke timeouts)."""

    status: int
    body: dict[str, Any] | str
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def _usage(prompt_tokens: int, output_tokens: int, thoughts_tokens: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": prompt_tokens + output_tokens + thoughts_tokens,
        "trafficType": "ON_DEMAND",
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": output_tokens}],
    }
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
    return usage


def text_reply(
    text: str,
    *,
    finish_reason: str = "STOP",
    prompt_tokens: int = 1200,
    output_tokens: int = 180,
    thoughts_tokens: int = 0,
    model_version: str = "gemini-2.5-flash",
) -> Reply:
    """A 200 whose first candidate's text is ``text``: the model's answer, as JSON or not."""
    return Reply(
        200,
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": finish_reason,
                    "avgLogprobs": -0.0421,
                }
            ],
            "usageMetadata": _usage(prompt_tokens, output_tokens, thoughts_tokens),
            "modelVersion": model_version,
            "createTime": "2026-01-15T10:00:00.000000Z",
            "responseId": "fake-response-id",
        },
    )


def analysis_reply(analysis: dict[str, Any], **kwargs: Any) -> Reply:
    """A 200 whose text is ``analysis`` as JSON (valid or not, as the test wants)."""
    return text_reply(json.dumps(analysis), **kwargs)


def prompt_blocked_reply(
    reason: str = "PROHIBITED_CONTENT", message: str = "The prompt was blocked."
) -> Reply:
    """The prompt was refused before generation: no candidates, ``promptFeedback.blockReason``."""
    return Reply(
        200,
        {
            "promptFeedback": {"blockReason": reason, "blockReasonMessage": message},
            "usageMetadata": {"promptTokenCount": 1200, "totalTokenCount": 1200},
            "modelVersion": "gemini-2.5-flash",
            "createTime": "2026-01-15T10:00:00.000000Z",
            "responseId": "fake-response-id",
        },
    )


def safety_finish_reply(category: str = "HARM_CATEGORY_DANGEROUS_CONTENT") -> Reply:
    """Generation stopped for safety: a candidate without content, ``finishReason: SAFETY``."""
    return Reply(
        200,
        {
            "candidates": [
                {
                    "finishReason": "SAFETY",
                    "safetyRatings": [
                        {
                            "category": category,
                            "probability": "HIGH",
                            "probabilityScore": 0.93,
                            "severity": "HARM_SEVERITY_HIGH",
                            "severityScore": 0.88,
                            "blocked": True,
                        },
                        {
                            "category": "HARM_CATEGORY_HARASSMENT",
                            "probability": "NEGLIGIBLE",
                            "probabilityScore": 0.02,
                            "severity": "HARM_SEVERITY_NEGLIGIBLE",
                            "severityScore": 0.01,
                        },
                    ],
                }
            ],
            "usageMetadata": {"promptTokenCount": 1200, "totalTokenCount": 1200},
            "modelVersion": "gemini-2.5-flash",
            "createTime": "2026-01-15T10:00:00.000000Z",
            "responseId": "fake-response-id",
        },
    )


def no_candidates_reply() -> Reply:
    return Reply(
        200,
        {
            "candidates": [],
            "usageMetadata": {"promptTokenCount": 1200, "totalTokenCount": 1200},
            "modelVersion": "gemini-2.5-flash",
        },
    )


_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_MESSAGES = {
    429: "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
    500: "Internal error encountered.",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline exceeded.",
}


def error_reply(code: int, message: str | None = None, status: str | None = None) -> Reply:
    """An error in Google's JSON format."""
    return Reply(
        code,
        {
            "error": {
                "code": code,
                "message": message or _DEFAULT_MESSAGES.get(code, HTTPStatus(code).phrase),
                "status": status or _STATUS_NAMES.get(code, "UNKNOWN"),
            }
        },
    )


def model_not_found_reply(project: str, location: str, model: str) -> Reply:
    """What Vertex answers for a wrong or retired model name."""
    return error_reply(
        404,
        f"Publisher Model `projects/{project}/locations/{location}/publishers/google/models/"
        f"{model}` was not found or your project does not have access to it. Please ensure you "
        "are using a valid model version. For more information, see: "
        "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions",
    )


# --- the server ------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    api_version: str | None = None
    project: str | None = None
    location: str | None = None
    model: str | None = None
    rejected: str | None = None  # why the fake refused it, like the service would

    @property
    def generation_config(self) -> dict[str, Any]:
        return dict(self.body.get("generationConfig", {}))

    @property
    def system_text(self) -> str:
        parts = self.body.get("systemInstruction", {}).get("parts", [])
        return "".join(p.get("text", "") for p in parts)

    @property
    def user_text(self) -> str:
        return "".join(
            p.get("text", "")
            for content in self.body.get("contents", [])
            if content.get("role", "user") == "user"
            for p in content.get("parts", [])
        )


class _Rejected(Exception):
    def __init__(self, reply: Reply, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


class VertexGeminiFake:
    def __init__(
        self,
        project: str = "test-project",
        location: str = "us-central1",
        models: tuple[str, ...] = ("gemini-2.5-flash",),
    ) -> None:
        self.project = project
        self.location = location
        self.models = set(models)
        self.requests: list[RecordedRequest] = []
        self.script_exhausted = False
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        # Port 0: the kernel picks a free port, no race with other tests.
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, at every test's teardown.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def client(self, project: str | None = None, location: str | None = None) -> Any:
        """A real ``genai.Client(vertexai=True)`` aimed at this fake, with a static token."""
        from google import genai
        from google.genai import types
        from google.oauth2.credentials import Credentials

        return genai.Client(
            vertexai=True,
            project=project or self.project,
            location=location or self.location,
            credentials=Credentials(token="fake-token"),
            http_options=types.HttpOptions(base_url=self.base_url),
        )

    # -- the script

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    @property
    def accepted(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.rejected is None]

    # -- request handling

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        recorded = RecordedRequest(
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            raw_body=raw,
            body=None,
        )
        try:
            self._check(recorded)
        except _Rejected as rejection:
            recorded.rejected = rejection.reason
            reply = rejection.reply
            with self._lock:
                self.requests.append(recorded)
        else:
            with self._lock:
                self.requests.append(recorded)
                if self._replies:
                    reply = self._replies.popleft()
                else:
                    self.script_exhausted = True
                    reply = error_reply(500, "vertex fake: no scripted reply left", "INTERNAL")
        if reply.delay:
            time.sleep(reply.delay)
        payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        data = payload.encode()
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json; charset=UTF-8")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def _check(self, req: RecordedRequest) -> None:
        match = _PATH.match(req.path.split("?", 1)[0])
        if match is None:
            raise _Rejected(error_reply(404, f"Path {req.path} not found."), "unknown path")
        req.api_version = match["version"]
        req.project, req.location, req.model = match["project"], match["location"], match["model"]

        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            raise _Rejected(
                error_reply(
                    401,
                    "Request is missing required authentication credential. Expected OAuth 2 "
                    "access token, login cookie or other valid authentication credential.",
                ),
                "no bearer token",
            )
        if req.project != self.project or req.location != self.location:
            raise _Rejected(
                error_reply(
                    403,
                    f"Permission 'aiplatform.endpoints.predict' denied on resource "
                    f"'//aiplatform.googleapis.com/projects/{req.project}/locations/"
                    f"{req.location}/publishers/google/models/{req.model}'.",
                ),
                "wrong project or location",
            )
        if req.model not in self.models:
            raise _Rejected(
                model_not_found_reply(req.project, req.location, req.model), "unknown model"
            )

        try:
            req.body = json.loads(req.raw_body)
        except ValueError:
            raise _Rejected(
                self._invalid("Invalid JSON payload received."), "body not JSON"
            ) from None
        if not isinstance(req.body, dict):
            raise _Rejected(self._invalid("Invalid JSON payload received."), "body not an object")
        self._unknown_fields(req.body, _REQUEST_FIELDS, "")

        contents = _field(req.body, "contents")
        if not isinstance(contents, list) or not contents:
            raise _Rejected(
                self._invalid("Unable to submit request because it has an empty contents field."),
                "no contents",
            )
        for i, content in enumerate(contents):
            self._check_content(content, f"contents[{i}]", require_role=True)

        system = _field(req.body, "systemInstruction")
        if system is None:
            raise _Rejected(self._invalid("systemInstruction is required."), "no systemInstruction")
        self._check_content(system, "system_instruction", require_role=False)

        config = _field(req.body, "generationConfig")
        if not isinstance(config, dict):
            raise _Rejected(self._invalid("generationConfig is required."), "no generationConfig")
        self._unknown_fields(config, _GENERATION_CONFIG_FIELDS, "generation_config.")
        if _field(config, "responseMimeType") != "application/json":
            raise _Rejected(
                self._invalid("generation_config.response_mime_type must be application/json."),
                "responseMimeType not JSON",
            )
        if _field(config, "responseSchema") and _field(config, "responseJsonSchema"):
            raise _Rejected(
                self._invalid(
                    "response_schema and response_json_schema cannot be set at the same time."
                ),
                "two schemas",
            )
        schema = _field(config, "responseSchema")
        if not isinstance(schema, dict):
            raise _Rejected(
                self._invalid("generation_config.response_schema is required."), "no responseSchema"
            )
        self._check_schema(schema, "generation_config.response_schema")
        if schema.get("type") != "OBJECT" or not schema.get("properties"):
            raise _Rejected(
                self._invalid("response_schema must be an OBJECT with properties."),
                "schema not an object",
            )
        temperature = _field(config, "temperature")
        if temperature is not None and not 0 <= temperature <= 2:
            raise _Rejected(self._invalid("temperature must be within [0, 2]."), "temperature")

    @staticmethod
    def _invalid(message: str) -> Reply:
        return error_reply(400, message, "INVALID_ARGUMENT")

    def _unknown_fields(self, obj: dict[str, Any], known: frozenset[str], where: str) -> None:
        # Proto JSON accepts the lowerCamelCase name and the proto (snake_case) name alike; the
        # SDK sends the schema in snake_case ("max_items", "property_ordering").
        unknown = sorted(name for name in obj if _camel(name) not in known)
        if unknown:
            raise _Rejected(
                self._invalid(
                    f'Invalid JSON payload received. Unknown name "{unknown[0]}" at '
                    f"'{where.rstrip('.') or 'request'}': Cannot find field."
                ),
                f"unknown field {where}{unknown[0]}",
            )

    def _check_content(self, content: Any, where: str, *, require_role: bool) -> None:
        if not isinstance(content, dict):
            raise _Rejected(self._invalid(f"{where} must be an object."), f"{where} not object")
        self._unknown_fields(content, _CONTENT_FIELDS, f"{where}.")
        if require_role and content.get("role") not in ("user", "model"):
            raise _Rejected(
                self._invalid(f"Please use a valid role: user, model. ({where})"), "bad role"
            )
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _Rejected(
                self._invalid(
                    f"Unable to submit request because it must include at least one parts "
                    f"field ({where})."
                ),
                f"{where} has no parts",
            )
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or not part:
                raise _Rejected(self._invalid(f"{where}.parts[{j}] is empty."), "empty part")
            self._unknown_fields(part, _PART_FIELDS, f"{where}.parts[{j}].")

    def _check_schema(self, schema: Any, where: str) -> None:
        if not isinstance(schema, dict):
            raise _Rejected(self._invalid(f"{where} must be an object."), f"{where} not object")
        self._unknown_fields(schema, _SCHEMA_FIELDS, f"{where}.")
        kind = schema.get("type")
        if kind is not None and kind not in _SCHEMA_TYPES:
            raise _Rejected(
                self._invalid(
                    f"Invalid value at '{where}.type' (type.googleapis.com/google."
                    f'cloud.aiplatform.v1beta1.Type), "{kind}"'
                ),
                f"{where}.type {kind}",
            )
        for name, sub in (schema.get("properties") or {}).items():
            self._check_schema(sub, f"{where}.properties[{name}]")
        if "items" in schema:
            self._check_schema(schema["items"], f"{where}.items")
        for k, sub in enumerate(_field(schema, "anyOf") or []):
            self._check_schema(sub, f"{where}.any_of[{k}]")
        missing = set(schema.get("required") or []) - set(schema.get("properties") or {})
        if missing:
            raise _Rejected(
                self._invalid(f"{where}.required names unknown properties: {sorted(missing)}"),
                "required without property",
            )
