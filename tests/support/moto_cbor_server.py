"""Run moto with a Smithy RPCv2-CBOR front end for CloudWatch.

aws-sdk-cloudwatch >= 1.100 talks to CloudWatch in the Smithy RPCv2-CBOR protocol
(POST /service/GraniteServiceVersion20100801/operation/<Op>, application/cbor), while
moto 5.2.5 only understands CloudWatch in awsJson1_0 (X-Amz-Target header, JSON body).
This module is a small WSGI layer in front of moto's own WSGI application, in the same
process:

* CloudWatch CBOR requests are decoded (gunzipped first when the SDK compressed them),
  turned into the equivalent awsJson1_0 request and handed to moto.
* moto's JSON answer is encoded back into CBOR, typed by botocore's bundled CloudWatch
  service model so that timestamps, doubles and integers have the CBOR types the Rust
  SDK's strict decoder expects.
* Errors become the shape the Rust SDK parses for rpcv2Cbor with awsQueryCompatible: a
  CBOR map with `__type` (the Smithy shape id) and `message`, plus the
  `x-amzn-query-error: <query error code>;<Sender|Receiver>` header, whose code is what
  the SDK matches its typed error variants on.
* Every other request (IAM, STS, EKS, /moto-api/) goes to moto untouched.

moto's recorder (MOTO_ENABLE_RECORDING, MOTO_RECORDER_FILEPATH) sees the request after
translation, so recorded CloudWatch calls carry an `X-Amz-Target` header, a JSON body,
and, when the SDK compressed the request, `X-Cbor-Shim-Original-Content-Encoding: gzip`.

Usage: python moto_cbor_server.py -H 127.0.0.1 -p 0 [--exit-when-stdin-closes]
With port 0 the OS picks a free port. Once the socket accepts connections the script
prints exactly one line, `listening on http://HOST:PORT`, to stdout.
"""

import argparse
import base64
import datetime
import gzip
import io
import json
import os
import signal
import sys
import threading
from http import HTTPStatus
from typing import Any, Callable, Iterable

import botocore.session
import cbor2
from werkzeug.serving import make_server

CLOUDWATCH_TARGET_PREFIX = "GraniteServiceVersion20100801"
CBOR_PATH_PREFIX = f"/service/{CLOUDWATCH_TARGET_PREFIX}/operation/"
CLOUDWATCH_SHAPE_NAMESPACE = "com.amazonaws.cloudwatch"
CBOR_CONTENT_TYPE = "application/cbor"
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
CBOR_TIMESTAMP_TAG = 1

# Request headers that describe the CBOR encoding of the original request. They are
# dropped so that moto sees a plain awsJson1_0 request.
CBOR_ONLY_REQUEST_HEADERS = (
    "HTTP_CONTENT_ENCODING",
    "HTTP_SMITHY_PROTOCOL",
    "HTTP_ACCEPT",
    "HTTP_X_AMZN_QUERY_MODE",
)

# The request header that tells moto's recorder how the CBOR request was encoded on the
# wire (e.g. gzip), since the encoding header itself is dropped in translation.
ORIGINAL_ENCODING_ENVIRON_KEY = "HTTP_X_CBOR_SHIM_ORIGINAL_CONTENT_ENCODING"

# Response headers of moto's JSON answer that do not apply to the CBOR answer: the
# encoding headers are recomputed, and `X-Amzn-Errortype` and `status` describe the JSON
# error form only.
RECOMPUTED_RESPONSE_HEADERS = {"content-type", "content-length", "content-encoding", "x-amzn-errortype", "status"}


# ---------------------------------------------------------------------------
# CBOR request -> JSON request
# ---------------------------------------------------------------------------


def epoch_seconds(moment: datetime.datetime) -> float | int:
    """Return a datetime as epoch seconds, as an int when it has no fraction."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    seconds = moment.timestamp()
    return int(seconds) if seconds.is_integer() else seconds


def cbor_to_json_value(value: Any) -> Any:
    """Turn a decoded CBOR value into something json.dumps accepts, the awsJson way.

    Timestamps (CBOR tag 1, which cbor2 decodes into datetimes) become epoch seconds,
    byte strings become base64 text, as awsJson1_0 encodes blobs.
    """
    if isinstance(value, datetime.datetime):
        return epoch_seconds(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, cbor2.CBORTag):
        if value.tag == CBOR_TIMESTAMP_TAG and isinstance(value.value, (int, float)):
            return value.value
        return cbor_to_json_value(value.value)
    if isinstance(value, dict):
        return {str(key): cbor_to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [cbor_to_json_value(item) for item in value]
    if value is cbor2.undefined or isinstance(value, cbor2.CBORSimpleValue):
        return None
    return value


def read_request_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    body = stream.read(length) if length > 0 else stream.read()
    if environ.get("HTTP_CONTENT_ENCODING", "").strip().lower() == "gzip":
        body = gzip.decompress(body)
    return body


# ---------------------------------------------------------------------------
# JSON response -> CBOR response, typed by the service model
# ---------------------------------------------------------------------------


def parse_timestamp(value: Any) -> float | int:
    """Accept the timestamp forms moto may emit: epoch numbers or ISO 8601 text."""
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, datetime.datetime):
        return epoch_seconds(value)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return epoch_seconds(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")))
    return int(number) if number.is_integer() else number


def parse_boolean(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def typed_cbor_value(value: Any, shape: Any) -> Any:
    """Give a JSON value the CBOR type that the model says its member has.

    JSON cannot tell 1 from 1.0 and has no timestamp type, but the Rust SDK's CBOR
    decoder is strict: a double must arrive as a CBOR float, a timestamp as tag 1.
    Values without a known shape are passed on as they are.
    """
    if value is None or shape is None:
        return value
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return value
        return {
            key: typed_cbor_value(item, shape.members.get(key))
            for key, item in value.items()
            if item is not None
        }
    if kind == "list":
        if not isinstance(value, list):
            return value
        return [typed_cbor_value(item, shape.member) for item in value]
    if kind == "map":
        if not isinstance(value, dict):
            return value
        return {key: typed_cbor_value(item, shape.value) for key, item in value.items()}
    if kind == "timestamp":
        return cbor2.CBORTag(CBOR_TIMESTAMP_TAG, parse_timestamp(value))
    if kind in ("double", "float"):
        return float(value)
    if kind in ("integer", "long", "short", "byte"):
        return int(value)
    if kind == "boolean":
        return parse_boolean(value)
    if kind == "blob":
        return base64.b64decode(value) if isinstance(value, str) else value
    if kind == "string":
        return value if isinstance(value, str) else str(value)
    return value


# ---------------------------------------------------------------------------
# The WSGI application
# ---------------------------------------------------------------------------


class CapturedResponse:
    """Collects what a WSGI application answers, so it can be rewritten."""

    def __init__(self) -> None:
        self.status = "500 INTERNAL SERVER ERROR"
        self.headers: list[tuple[str, str]] = []
        self.written = io.BytesIO()

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], Any]:
        self.status = status
        self.headers = list(headers)
        return self.written.write

    @property
    def status_code(self) -> int:
        return int(self.status.split(" ", 1)[0])

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def run_captured(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[CapturedResponse, bytes]:
    captured = CapturedResponse()
    result = app(environ, captured.start_response)
    try:
        body = captured.written.getvalue() + b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return captured, body


class CborTranslator:
    """WSGI middleware: CloudWatch RPCv2-CBOR in front, moto's awsJson1_0 behind."""

    def __init__(self, moto_app: Callable[..., Iterable[bytes]]) -> None:
        self.moto_app = moto_app
        self.model = botocore.session.get_session().get_service_model("cloudwatch")
        self.operation_names = set(self.model.operation_names)
        # Query error codes are not unique across shapes ("ResourceNotFound" is both
        # DashboardNotFoundError and ResourceNotFound), so operation errors are looked
        # up first and this table is only the fallback.
        self.error_shapes_by_code: dict[str, Any] = {}
        for shape in self.model.error_shapes:
            self.error_shapes_by_code.setdefault(shape.error_code, shape)
            self.error_shapes_by_code.setdefault(shape.name, shape)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") == "POST" and path.startswith(CBOR_PATH_PREFIX):
            operation = path[len(CBOR_PATH_PREFIX):].strip("/")
            return self.handle_cbor(operation, environ, start_response)
        return self.moto_app(environ, start_response)

    def handle_cbor(self, operation: str, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            raw = read_request_body(environ)
            request = cbor2.loads(raw) if raw else {}
            json_body = json.dumps(cbor_to_json_value(request if request is not None else {})).encode()
        except Exception as error:  # Anything undecodable is the client's fault.
            return self.send_error(
                start_response,
                operation,
                400,
                "InvalidParameterValue",
                f"the CBOR translation layer could not decode the request body: {error}",
                None,
            )

        json_environ = dict(environ)
        for key in CBOR_ONLY_REQUEST_HEADERS:
            json_environ.pop(key, None)
        # Keep a trace of the wire encoding in the recording, so tests can tell that
        # the SDK compressed a large request.
        original_encoding = environ.get("HTTP_CONTENT_ENCODING")
        if original_encoding:
            json_environ[ORIGINAL_ENCODING_ENVIRON_KEY] = original_encoding
        json_environ.update(
            {
                "PATH_INFO": "/",
                "RAW_URI": "/",
                "REQUEST_URI": "/",
                "QUERY_STRING": "",
                "CONTENT_TYPE": JSON_CONTENT_TYPE,
                "CONTENT_LENGTH": str(len(json_body)),
                "HTTP_X_AMZ_TARGET": f"{CLOUDWATCH_TARGET_PREFIX}.{operation}",
                "wsgi.input": io.BytesIO(json_body),
            }
        )
        try:
            captured, body = run_captured(self.moto_app, json_environ)
        except Exception as error:  # An answer the SDK can parse beats a dropped connection.
            # 501 for what moto lacks: the SDK retries a 500, which only delays the failure.
            not_implemented = isinstance(error, NotImplementedError) or type(error).__name__ == "OperationNotFoundError"
            return self.send_error(
                start_response,
                operation,
                501 if not_implemented else 500,
                "InternalServiceError",
                f"moto failed on CloudWatch {operation}: {error!r}",
                None,
            )

        if captured.status_code >= 400:
            return self.translate_error(start_response, operation, captured, body)

        try:
            document = json.loads(body) if body.strip() else {}
        except ValueError:
            return self.send_error(
                start_response,
                operation,
                500,
                "InternalServiceError",
                f"moto answered {operation} with a body that is not JSON: {body[:200]!r}",
                None,
            )
        output_shape = None
        if operation in self.operation_names:
            output_shape = self.model.operation_model(operation).output_shape
        payload = cbor2.dumps(typed_cbor_value(document, output_shape) if output_shape else document)
        return self.send_cbor(start_response, captured.status, payload, captured.headers, [])

    def translate_error(
        self, start_response: Callable[..., Any], operation: str, captured: CapturedResponse, body: bytes
    ) -> Iterable[bytes]:
        code = None
        message = None
        try:
            document = json.loads(body)
            if isinstance(document, dict):
                code = document.get("__type") or document.get("code")
                message = document.get("message") or document.get("Message")
        except ValueError:
            document = None
        query_error = captured.header("x-amzn-query-error")
        if code is None:
            # Not a JSON error, e.g. a werkzeug HTML page for an exception inside moto.
            code = "InternalServiceError" if captured.status_code >= 500 else "InvalidParameterValue"
            text = body.decode("utf-8", "replace").strip()
            message = f"moto answered HTTP {captured.status_code}: {text[:500]}"
        return self.send_error(
            start_response, operation, captured.status_code, str(code), message, query_error, captured.headers
        )

    def error_shape(self, operation: str, code: str) -> Any:
        if operation in self.operation_names:
            for shape in self.model.operation_model(operation).error_shapes:
                if code in (shape.error_code, shape.name):
                    return shape
        return self.error_shapes_by_code.get(code)

    def send_error(
        self,
        start_response: Callable[..., Any],
        operation: str,
        status_code: int,
        code: str,
        message: str | None,
        query_error: str | None,
        upstream_headers: list[tuple[str, str]] | None = None,
    ) -> Iterable[bytes]:
        # Same clean-up as the SDK applies to `__type`: drop a trailing ":url" and a
        # leading "namespace#".
        code = code.split(":", 1)[0].split("#")[-1]
        if query_error:
            code = query_error.split(";", 1)[0]
        shape = self.error_shape(operation, code)
        shape_name = shape.name if shape is not None else code
        query_code = shape.error_code if shape is not None else code
        if not query_error:
            fault = "Receiver" if status_code >= 500 else "Sender"
            query_error = f"{query_code};{fault}"
        error_body: dict[str, Any] = {"__type": f"{CLOUDWATCH_SHAPE_NAMESPACE}#{shape_name}"}
        if message is not None:
            error_body["message"] = str(message)
        try:
            reason = HTTPStatus(status_code).phrase
        except ValueError:
            reason = "Error"
        status = f"{status_code} {reason}"
        return self.send_cbor(
            start_response,
            status,
            cbor2.dumps(error_body),
            upstream_headers or [],
            [("x-amzn-query-error", query_error)],
        )

    @staticmethod
    def send_cbor(
        start_response: Callable[..., Any],
        status: str,
        payload: bytes,
        upstream_headers: list[tuple[str, str]],
        extra_headers: list[tuple[str, str]],
    ) -> Iterable[bytes]:
        replaced = RECOMPUTED_RESPONSE_HEADERS | {name.lower() for name, _ in extra_headers}
        headers = [(name, value) for name, value in upstream_headers if name.lower() not in replaced]
        headers += extra_headers
        headers += [
            ("Content-Type", CBOR_CONTENT_TYPE),
            ("smithy-protocol", "rpc-v2-cbor"),
            ("Content-Length", str(len(payload))),
        ]
        start_response(status, headers)
        return [payload]


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------


def build_application() -> CborTranslator:
    # moto reads its environment variables (MOTO_ENABLE_RECORDING, MOTO_ACCOUNT_ID, ...)
    # when it is imported, so it is imported only here, after the process started.
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return CborTranslator(DomainDispatcherApplication(create_backend_app))


def exit_on_signal(signum: int, frame: Any) -> None:
    # Raised in the main thread, it unwinds serve_forever, whose finally closes the socket.
    raise SystemExit(0)


def exit_when_stdin_closes() -> None:
    """Stop the server once the parent closes our stdin, e.g. because it died.

    This keeps a test run that was killed hard from leaving emulators behind.
    """
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("-p", "--port", type=int, default=5000, help="port to listen on; 0 lets the OS pick")
    parser.add_argument(
        "--exit-when-stdin-closes",
        action="store_true",
        help="shut down when stdin reaches end of file (the parent went away)",
    )
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGINT, exit_on_signal)

    from moto.moto_server.werkzeug_app import MotoRequestHandler

    application = build_application()
    server = make_server(args.host, args.port, application, threaded=True, request_handler=MotoRequestHandler)
    port = server.server_port
    # moto builds some URLs (S3, SQS) from MOTO_PORT; with port 0 only now is it known.
    os.environ["MOTO_PORT"] = str(port)

    if args.exit_when_stdin_closes:
        threading.Thread(target=exit_when_stdin_closes, name="stdin-watch", daemon=True).start()

    # The socket is bound and listening since make_server returned, so connections made
    # after this line is read are accepted.
    print(f"listening on http://{args.host}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
