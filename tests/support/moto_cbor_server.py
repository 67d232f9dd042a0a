"""Run moto with a Smithy RPCv2-CBOR front end for CloudWatch and the EKS calls it lacks.

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
* The EKS REST-JSON operations moto 5.2.5 does not route (it answers them with an HTML
  404) are emulated here, in front of moto: EKS Pod Identity associations (create, list,
  describe, update, delete) and add-ons (create, describe, list, delete). Their state
  hangs off moto's own cluster objects, so it exists only while the cluster does and
  `POST /moto-api/reset` wipes it along with everything else. These requests are written
  to moto's recording exactly as moto records the requests it answers itself.
* A sandbox-only control API, which is not an AWS API and is not recorded:
  `POST /sandbox-api/clusters/{name}/endpoint` with `{"endpoint": "https://..."}` makes
  DescribeCluster report that endpoint for the cluster (the fake Kubernetes API server's
  URL, so that "does the kube context point at this cluster?" can pass), and
  `POST /sandbox-api/clusters/{name}/addons/{addonName}/status` with
  `{"status": "DEGRADED"}` sets an emulated add-on's status. Both accept optional
  `"region"` and `"accountId"` members; without them every cluster of that name changes.
  `POST /sandbox-api/cloudwatch/hang` with `{"seconds": 30}` makes CloudWatch hang: every
  PutMetricData that arrives in the next 30 s is accepted and held unanswered until then,
  and then answered 503 ServiceUnavailable without being stored (the client gave up long
  before, as it would on a CloudWatch that never answers); `{"seconds": 0}` ends a hang.
* PutMetricData values are checked like CloudWatch checks them (moto 5.2.5 stores any
  number): a value that is not finite, beyond +-1.174271e108 or non-zero below
  8.515920e-109 in magnitude fails the whole call with 400 InvalidParameterValue
  ("The value ... for parameter MetricData.member.N.Value is out of range."), before moto
  sees or records it.
* EKS TagResource (`POST /tags/{arn}`) on a Pod Identity association's ARN is answered
  here too (moto only knows cluster tags); on any other ARN it goes to moto.
* CloudWatch dashboards are global per account, as on AWS (its docs: "All dashboards in
  your account are global, not region-specific"), while moto keeps them per region: every
  region's CloudWatch backend of an account (and partition) is given one shared
  dashboards table, so PutDashboard in one region is seen by GetDashboard and
  ListDashboards in every other, and a test can see the collisions real AWS would have.
* ECR's registry side is a real OCI registry (Debian's docker-registry) once the sandbox
  registers one with `POST /sandbox-api/ecr/registry` (`{"endpoint": "http://127.0.0.1:PORT"}`):
  GetAuthorizationToken names it, repository URIs carry its host, and DescribeImages lists
  what was pushed to it (see `EcrRegistryBridge`).
* GetMetricWidgetImage, which moto lacks, is drawn here: the MetricWidget JSON's metrics
  are read from moto's CloudWatch backend of the request's account and region and
  plotted with matplotlib (Agg) at the requested width and height, with title, axis
  labels, yAxis limits and horizontal annotations. Metric math of + - * / over query ids
  and numbers (`100 * assigned / capacity`) is evaluated and drawn; any other expression
  is not drawn and is named in the legend as such. OutputFormat png only.
* CloudWatch metric alarms are moto's, with what moto 5.2.5 gets wrong fixed on its
  backend (so for every protocol; see `fix_cloudwatch_alarms`): a new alarm starts in
  INSUFFICIENT_DATA ("Unchecked: Initial alarm creation") with a StateTransitionedTimestamp
  (moto: OK); PutMetricAlarm on an existing name replaces the configuration but keeps the
  state and ignores `Tags`, as CloudWatch does (moto resets the state and merges the tags);
  DeleteAlarms deletes the alarm's tags (moto kept them for the next alarm of that name);
  ListTagsForResource and UntagResource of an ARN that is no alarm (or insight rule)
  answer ResourceNotFoundException (moto listed nothing, and refused to untag an alarm
  without tags);
  DescribeAlarms combines AlarmNames/AlarmNamePrefix/ActionPrefix/StateValue, answers
  composite alarms only when AlarmTypes names CompositeAlarm (without AlarmTypes, metric
  alarms only, as CloudWatch), sorts by name and pages by MaxRecords (1-100, default 50)
  and NextToken (moto ignored both). PutMetricAlarm checks what CloudWatch checks and moto
  does not: AlarmName of 1-255 characters, EvaluationPeriods >= 1, 1 <= DatapointsToAlarm
  <= EvaluationPeriods, TreatMissingData and ComparisonOperator values, Metrics not mixed
  with MetricName/Namespace/Statistic and with exactly one query returning data
  (ReturnData defaults to true), and MetricName or Metrics given. Alarms stay per region,
  as on AWS. DescribeAlarmHistory is not implemented (moto lacks it).
* `POST /sandbox-api/cloudwatch/evaluate-alarms` (a control knob, not recorded), with the
  JSON body `{"at": <epoch seconds, default now>, "region": ..., "accountId": ...}` (all
  optional), evaluates every metric alarm (of that region and account, or all) as
  CloudWatch would at `at`, since moto never does: for each of the last EvaluationPeriods
  periods (period k covers [at - k*Period, at - (k-1)*Period)), each MetricStat's
  statistic (Maximum, Minimum, Average, Sum, SampleCount, pNN by nearest rank over single
  values) over the datapoints PutMetricData stored for that metric with exactly those
  dimensions (unit and storage resolution ignored); then the expressions (+ - * /,
  parentheses, numbers, query ids, also of other expressions; a division by zero or a
  missing operand gives no datapoint), the query with ReturnData true, the comparison with
  Threshold, DatapointsToAlarm out of EvaluationPeriods, and TreatMissingData: when every
  period lacks data, `missing` (the default) gives INSUFFICIENT_DATA, `breaching` ALARM,
  `notBreaching` OK and `ignore` keeps the state; when only some do, missing periods count
  as breaching only with `breaching` (CloudWatch would also look further back). An alarm
  whose expression the sandbox cannot evaluate (functions such as METRICS() or FILL())
  goes to INSUFFICIENT_DATA with a reason that says so. A changed state is set through
  moto's `set_alarm_state`, with a StateReason in CloudWatch's words ("Threshold Crossed: 1
  out of the last 1 datapoints [95.0 (02/12/26 12:00:00)] was greater than the threshold
  (90.0) (minimum 1 datapoint for OK -> ALARM transition).") and StateReasonData JSON; an
  unchanged one is left alone. Answer: `{"alarms": [{"alarmName", "region", "state",
  "reason", "changed"}]}`, in account, region and name order. No alarm actions are run.
* IAM SimulatePrincipalPolicy (query protocol, which moto 5.2.5 lacks) is answered here
  from moto's IAM state, and recorded as moto records its own requests: the
  PolicySourceArn must be a user, role or group of moto's IAM (else 404 NoSuchEntity,
  "The role with name X cannot be found."; 400 InvalidInput for another ARN); its inline
  and attached managed policies (a user's groups' too) are evaluated for every action in
  ActionNames on every resource in ResourceArns (default `*`) with IAM's logic: an
  explicit Deny wins, then an Allow, else implicitDeny; Action/NotAction match
  case-insensitively with `*` and `?`, Resource/NotResource case-sensitively. Conditions
  are evaluated against the request's ContextEntries only (the simulator supplies no
  context of its own), with the String*, Arn*, Bool, Numeric* and Null operators, the
  `IfExists` suffix and the ForAnyValue/ForAllValues prefixes: a key the context lacks
  fails its test (the statement does not apply; `...IfExists` and Null hold) and is listed
  in MissingContextValues, as the real simulator does. The other operators (Date*,
  IpAddress, NotIpAddress, BinaryEquals) are NOT evaluated: they fail, and their keys are
  listed in MissingContextValues too. Resource-based policies, permissions boundaries,
  SCPs, session policies, CallerArn, policy variables (`${aws:username}`) and pagination
  (MaxItems/Marker) are ignored; IsTruncated is always false and there are no
  ResourceSpecificResults (one EvaluationResults member per action and resource instead).
  MatchedStatements name the policy (SourcePolicyId, SourcePolicyType
  user|group|role|aws-managed|user-managed) but not the statement's position.
* Every other request (IAM, STS, the rest of EKS and ECR, /moto-api/) goes to moto untouched.

moto's recorder (MOTO_ENABLE_RECORDING, MOTO_RECORDER_FILEPATH) sees the request after
translation, so recorded CloudWatch calls carry an `X-Amz-Target` header, a JSON body,
and, when the SDK compressed the request, `X-Cbor-Shim-Original-Content-Encoding: gzip`.

Usage: python moto_cbor_server.py -H 127.0.0.1 -p 0 [--exit-when-stdin-closes]
With port 0 the OS picks a free port. Once the socket accepts connections the script
prints exactly one line, `listening on http://HOST:PORT`, to stdout.
"""

import argparse
import base64
import dataclasses
import datetime
import gzip
import io
import json
import os
import re
import signal
import socket
import string
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
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

# The request header that tells moto's recorder when the CBOR request arrived (Unix seconds,
# microsecond resolution, taken before any sandbox hang), so that tests can order the calls
# of several clients in time.
RECEIVED_AT_ENVIRON_KEY = "HTTP_X_SANDBOX_RECEIVED_AT"

# Response headers of moto's JSON answer that do not apply to the CBOR answer: the
# encoding headers are recomputed, and `X-Amzn-Errortype` and `status` describe the JSON
# error form only.
RECOMPUTED_RESPONSE_HEADERS = {"content-type", "content-length", "content-encoding", "x-amzn-errortype", "status"}

# CloudWatch's documented value range for PutMetricData.
CLOUDWATCH_MAX_MAGNITUDE = 1.174271e108
CLOUDWATCH_MIN_MAGNITUDE = 8.515920e-109


def out_of_range_value(metric_data: Any) -> str | None:
    """CloudWatch's message for the first value it would refuse in `MetricData`, if any."""
    if not isinstance(metric_data, list):
        return None
    for position, member in enumerate(metric_data, start=1):
        if not isinstance(member, dict):
            continue
        candidates = []
        if "Value" in member:
            candidates.append((f"MetricData.member.{position}.Value", member["Value"]))
        for index, value in enumerate(member.get("Values") or [], start=1):
            candidates.append((f"MetricData.member.{position}.Values.member.{index}", value))
        for parameter, value in candidates:
            try:
                number = float(value)
            except (TypeError, ValueError):
                return f"The value {value!r} for parameter {parameter} is not a number."
            magnitude = abs(number)
            # NaN fails every comparison, so it is refused like the infinities.
            if not (magnitude <= CLOUDWATCH_MAX_MAGNITUDE and (magnitude == 0.0 or magnitude >= CLOUDWATCH_MIN_MAGNITUDE)):
                return f"The value {value!r} for parameter {parameter} is out of range."
    return None


class CloudWatchHang:
    """The `/sandbox-api/cloudwatch/hang` knob: until `deadline` (time.monotonic()),
    PutMetricData calls are held unanswered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deadline = 0.0

    def hang_for(self, seconds: float) -> None:
        with self.lock:
            self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        with self.lock:
            return max(0.0, self.deadline - time.monotonic())

    def wait_out(self) -> bool:
        """Blocks while a hang lasts (it may be extended or ended meanwhile); True when
        there was one."""
        held = False
        while (remaining := self.remaining()) > 0:
            held = True
            time.sleep(min(remaining, 0.2))
        return held


CLOUDWATCH_HANG = CloudWatchHang()


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


def json_request_environ(
    environ: dict[str, Any], operation: str, json_body: bytes, received_at: float
) -> dict[str, Any]:
    """The awsJson1_0 request moto sees (and records) for a CBOR request."""
    json_environ = dict(environ)
    for key in CBOR_ONLY_REQUEST_HEADERS:
        json_environ.pop(key, None)
    # Keep a trace of the wire encoding in the recording, so tests can tell that
    # the SDK compressed a large request.
    original_encoding = environ.get("HTTP_CONTENT_ENCODING")
    if original_encoding:
        json_environ[ORIGINAL_ENCODING_ENVIRON_KEY] = original_encoding
    json_environ[RECEIVED_AT_ENVIRON_KEY] = f"{received_at:.6f}"
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
    return json_environ


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
        received_at = time.time()
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

        if operation == "GetMetricWidgetImage":
            return self.metric_widget_image(request, environ, json_body, received_at, start_response)

        if operation == "PutMetricData":
            # Each request has its own thread, so holding this one holds nothing else.
            if CLOUDWATCH_HANG.wait_out():
                return self.send_error(
                    start_response,
                    operation,
                    503,
                    "ServiceUnavailable",
                    "the sandbox held this PutMetricData unanswered (POST /sandbox-api/cloudwatch/hang) "
                    "and did not store it",
                    None,
                )
            refused = out_of_range_value(request.get("MetricData") if isinstance(request, dict) else None)
            if refused is not None:
                return self.send_error(start_response, operation, 400, "InvalidParameterValue", refused, None)

        json_environ = json_request_environ(environ, operation, json_body, received_at)
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

    def metric_widget_image(
        self,
        request: Any,
        environ: dict[str, Any],
        json_body: bytes,
        received_at: float,
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        """GetMetricWidgetImage, which moto lacks: the widget drawn from moto's datapoints.
        Recorded as moto records the calls it answers itself."""
        operation = "GetMetricWidgetImage"
        record_request(json_request_environ(environ, operation, json_body, received_at), json_body)
        request = request if isinstance(request, dict) else {}
        output_format = request.get("OutputFormat") or "png"
        if output_format not in ("png", "image/png"):
            return self.send_error(
                start_response,
                operation,
                400,
                "InvalidParameterValue",
                f"the sandbox draws OutputFormat png only, not {output_format!r}",
                None,
            )
        try:
            widget = json.loads(request.get("MetricWidget") or "")
            if not isinstance(widget, dict):
                raise WidgetError("MetricWidget must be a JSON object")
            image = draw_widget(widget, environ)
        except (ValueError, TypeError) as error:  # WidgetError and JSONDecodeError are ValueErrors.
            return self.send_error(
                start_response, operation, 400, "InvalidParameterValue", f"MetricWidget: {error}", None
            )
        output_shape = self.model.operation_model(operation).output_shape
        payload = cbor2.dumps(typed_cbor_value({"MetricWidgetImage": image}, output_shape))
        return self.send_cbor(start_response, "200 OK", payload, [], [])

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
# EKS operations moto lacks, and the sandbox control API
# ---------------------------------------------------------------------------

EKS_SIGNING_NAME = "eks"
EKS_JSON_CONTENT_TYPE = "application/json"
SANDBOX_API_PREFIX = "/sandbox-api/"
MOTO_RESET_PATH = "/moto-api/reset"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"

# Real association ids are "a-" and 17 lowercase letters and digits.
ASSOCIATION_ID_ALPHABET = string.ascii_lowercase + string.digits
ASSOCIATION_ID_LENGTH = 17

# The bounds the service model gives maxResults of ListPodIdentityAssociations and
# ListAddons.
MAX_RESULTS_RANGE = (1, 100)

# The version CreateAddon reports when the request names none. EKS picks the default
# version for the cluster's Kubernetes version; the sandbox has no version table, so it
# uses a fixed, plausible one per add-on.
DEFAULT_ADDON_VERSIONS = {
    "eks-pod-identity-agent": "v1.3.4-eksbuild.1",
    "vpc-cni": "v1.19.2-eksbuild.1",
    "coredns": "v1.11.4-eksbuild.2",
    "kube-proxy": "v1.32.0-eksbuild.2",
}
FALLBACK_ADDON_VERSION = "v1.0.0-eksbuild.1"

# Which operations the layer answers, by method and path. Each path pattern names the
# cluster first, then the association id or add-on name when there is one.
POD_IDENTITY_COLLECTION = re.compile(r"^/clusters/(?P<cluster>[^/]+)/pod-identity-associations/?$")
POD_IDENTITY_ITEM = re.compile(r"^/clusters/(?P<cluster>[^/]+)/pod-identity-associations/(?P<item>[^/]+)/?$")
ADDON_COLLECTION = re.compile(r"^/clusters/(?P<cluster>[^/]+)/addons/?$")
ADDON_ITEM = re.compile(r"^/clusters/(?P<cluster>[^/]+)/addons/(?P<item>[^/]+)/?$")
TAGS_ITEM = re.compile(r"^/tags/(?P<arn>.+)$")
CONTROL_ENDPOINT = re.compile(r"^/sandbox-api/clusters/(?P<cluster>[^/]+)/endpoint/?$")
CONTROL_ADDON_STATUS = re.compile(r"^/sandbox-api/clusters/(?P<cluster>[^/]+)/addons/(?P<item>[^/]+)/status/?$")
CONTROL_CLOUDWATCH_HANG = re.compile(r"^/sandbox-api/cloudwatch/hang/?$")

AWS_REGION_IN_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request")
ACCESS_KEY_IN_SCOPE = re.compile(r"Credential=(?P<key>[^/]+)/")


class EksError(Exception):
    """An EKS error answer: the error shape's name, its HTTP status and members.

    The Rust SDK reads the error code from the `x-amzn-ErrorType` header, as moto's
    own EKS errors send it, and the members (`message`, `clusterName`, ...) from the
    JSON body.
    """

    def __init__(self, code: str, status: int, message: str, **members: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.members = {"message": message, **members}


def not_found(message: str, **members: str) -> EksError:
    return EksError("ResourceNotFoundException", 404, message, **members)


def in_use(message: str, **members: str) -> EksError:
    return EksError("ResourceInUseException", 409, message, **members)


def invalid_parameter(message: str, **members: str) -> EksError:
    return EksError("InvalidParameterException", 400, message, **members)


def invalid_request(message: str, **members: str) -> EksError:
    return EksError("InvalidRequestException", 400, message, **members)


def now_epoch() -> float:
    """The current time as rest-json timestamps are sent: epoch seconds, to the ms."""
    return round(time.time(), 3)


@dataclasses.dataclass
class PodIdentityAssociation:
    cluster_name: str
    namespace: str
    service_account: str
    role_arn: str
    association_arn: str
    association_id: str
    tags: dict[str, str]
    created_at: float
    modified_at: float
    disable_session_tags: bool = False
    target_role_arn: str | None = None
    policy: str | None = None
    client_request_token: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The PodIdentityAssociation shape, without the members that are unset."""
        document: dict[str, Any] = {
            "clusterName": self.cluster_name,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "roleArn": self.role_arn,
            "associationArn": self.association_arn,
            "associationId": self.association_id,
            "tags": dict(self.tags),
            "createdAt": self.created_at,
            "modifiedAt": self.modified_at,
            "disableSessionTags": self.disable_session_tags,
        }
        if self.target_role_arn is not None:
            document["targetRoleArn"] = self.target_role_arn
            # EKS generates an external id for the role chaining it does with a target role.
            document["externalId"] = self.association_id
        if self.policy is not None:
            document["policy"] = self.policy
        return document

    def summary(self) -> dict[str, Any]:
        """The PodIdentityAssociationSummary shape that ListPodIdentityAssociations returns."""
        return {
            "clusterName": self.cluster_name,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "associationArn": self.association_arn,
            "associationId": self.association_id,
        }


@dataclasses.dataclass
class Addon:
    addon_name: str
    cluster_name: str
    addon_version: str
    addon_arn: str
    created_at: float
    modified_at: float
    status: str = "ACTIVE"
    service_account_role_arn: str | None = None
    configuration_values: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The Addon shape, without the members that are unset."""
        document: dict[str, Any] = {
            "addonName": self.addon_name,
            "clusterName": self.cluster_name,
            "status": self.status,
            "addonVersion": self.addon_version,
            "health": {"issues": []},
            "addonArn": self.addon_arn,
            "createdAt": self.created_at,
            "modifiedAt": self.modified_at,
            "tags": dict(self.tags),
            "podIdentityAssociations": [],
        }
        if self.service_account_role_arn is not None:
            document["serviceAccountRoleArn"] = self.service_account_role_arn
        if self.configuration_values is not None:
            document["configurationValues"] = self.configuration_values
        return document


@dataclasses.dataclass
class ClusterExtras:
    """What the layer keeps for one moto cluster, in the order things were created."""

    associations: dict[str, PodIdentityAssociation] = dataclasses.field(default_factory=dict)
    addons: dict[str, Addon] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EksRequest:
    """One request to an EKS operation the layer answers, with what it needs to know."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    account_id: str
    region: str

    def json_body(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            document = json.loads(self.body)
        except ValueError as error:
            raise invalid_request(f"the request body is not JSON: {error}") from error
        if not isinstance(document, dict):
            raise invalid_request("the request body is not a JSON object")
        return document

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


def text_member(document: dict[str, Any], name: str, required: bool) -> str | None:
    """A string member of a request body; a missing required one is the caller's error."""
    value = document.get(name)
    if value is None or value == "":
        if required:
            raise invalid_parameter(f"{name} is required and was not given")
        return None
    if not isinstance(value, str):
        raise invalid_parameter(f"{name} must be a string, not {value!r}")
    return value


def tags_member(document: dict[str, Any]) -> dict[str, str]:
    tags = document.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise invalid_parameter("tags must map strings to strings")
    return dict(tags)


def role_arn_member(document: dict[str, Any], name: str, required: bool) -> str | None:
    """An IAM role ARN member. EKS refuses anything that is not a role ARN."""
    value = text_member(document, name, required)
    if value is not None and not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", value):
        raise invalid_parameter(f"{name} {value!r} is not an IAM role ARN")
    return value


def paginate(items: list[Any], request: EksRequest, cursor: Callable[[Any], str]) -> tuple[list[Any], str | None]:
    """One page of `items`: `nextToken` is the cursor of the first item not returned."""
    raw_max = request.query_value("maxResults")
    max_results = MAX_RESULTS_RANGE[1]
    if raw_max is not None:
        try:
            max_results = int(raw_max)
        except ValueError as error:
            raise invalid_parameter(f"maxResults {raw_max!r} is not a number") from error
        if not MAX_RESULTS_RANGE[0] <= max_results <= MAX_RESULTS_RANGE[1]:
            raise invalid_parameter(
                f"maxResults must be between {MAX_RESULTS_RANGE[0]} and {MAX_RESULTS_RANGE[1]}, not {max_results}"
            )
    start = 0
    token = request.query_value("nextToken")
    if token:
        cursors = [cursor(item) for item in items]
        if token not in cursors:
            raise invalid_parameter(f"the nextToken {token!r} is not valid (any more)")
        start = cursors.index(token)
    page = items[start : start + max_results]
    following = items[start + max_results : start + max_results + 1]
    return page, (cursor(following[0]) if following else None)


class EksEmulation:
    """WSGI middleware: the EKS operations moto lacks, and the sandbox control API.

    Everything else goes to the next application. The emulated state is attached to
    moto's cluster objects through a WeakKeyDictionary: a cluster that moto deletes or
    forgets on reset takes its associations and add-ons with it, and a cluster created
    again under the same name starts empty, as on EKS.
    """

    def __init__(self, next_app: Callable[..., Iterable[bytes]]) -> None:
        self.next_app = next_app
        self.lock = threading.Lock()
        self.extras: "weakref.WeakKeyDictionary[Any, ClusterExtras]" = weakref.WeakKeyDictionary()
        # The EKS operations we answer ourselves, by path pattern and method; built once,
        # as every request (IAM, STS and CloudWatch too) is looked up here.
        self.routes: list[tuple[re.Pattern[str], dict[str, Callable[[EksRequest, re.Match[str]], tuple[int, dict[str, Any]]]]]] = [
            (
                POD_IDENTITY_COLLECTION,
                {"POST": self.create_pod_identity_association, "GET": self.list_pod_identity_associations},
            ),
            (
                POD_IDENTITY_ITEM,
                {
                    "GET": self.describe_pod_identity_association,
                    "POST": self.update_pod_identity_association,
                    "DELETE": self.delete_pod_identity_association,
                },
            ),
            (ADDON_COLLECTION, {"POST": self.create_addon, "GET": self.list_addons}),
            (ADDON_ITEM, {"GET": self.describe_addon, "DELETE": self.delete_addon}),
        ]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith(SANDBOX_API_PREFIX):
            return self.handle_control(method, path, environ, start_response)
        if path == MOTO_RESET_PATH and method == "POST":
            # moto's reset gives every backend new cluster objects, which already drops
            # our state with the old ones; clearing it here as well frees it at once.
            with self.lock:
                self.extras.clear()
            forget_shared_dashboards()
            return self.next_app(environ, start_response)
        tags_match = TAGS_ITEM.match(path)
        if tags_match is not None and method == "POST" and request_service(environ) in (EKS_SIGNING_NAME, None):
            answered = self.tag_association(environ, start_response, urllib.parse.unquote(tags_match["arn"]))
            if answered is not None:
                return answered
        handler = self.eks_handler(method, path)
        if handler is None or request_service(environ) not in (EKS_SIGNING_NAME, None):
            return self.next_app(environ, start_response)
        body = read_bodiless_safe(environ)
        record_request(environ, body)
        request = EksRequest(
            method=method,
            path=path,
            query=urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            body=body,
            account_id=request_account(environ),
            region=request_region(environ),
        )
        operation, match = handler
        try:
            with self.lock:
                status, document = operation(request, match)
        except EksError as error:
            return send_json(start_response, error.status, error.members, [("x-amzn-ErrorType", error.code)])
        except Exception as error:  # A typed answer beats werkzeug's HTML error page.
            return send_json(
                start_response,
                500,
                {"message": f"the sandbox's EKS emulation failed on {method} {path}: {error!r}"},
                [("x-amzn-ErrorType", "ServerException")],
            )
        return send_json(start_response, status, document, [])

    def tag_association(
        self, environ: dict[str, Any], start_response: Callable[..., Any], arn: str
    ) -> Iterable[bytes] | None:
        """TagResource on a Pod Identity association, or None when the ARN is not one."""
        with self.lock:
            association = next(
                (
                    association
                    for extras in list(self.extras.values())
                    for association in extras.associations.values()
                    if association.association_arn == arn
                ),
                None,
            )
        if association is None:
            return None
        body = read_bodiless_safe(environ)
        record_request(environ, body)
        try:
            document = json.loads(body or b"{}")
            if not isinstance(document, dict):
                raise invalid_parameter("the body is not a JSON object")
            tags = tags_member(document)
            if not tags:
                raise invalid_parameter("tags must not be empty")
        except ValueError as error:
            return send_json(
                start_response, 400, {"message": f"the body is not JSON: {error}"}, [("x-amzn-ErrorType", "BadRequestException")]
            )
        except EksError as error:
            return send_json(start_response, error.status, error.members, [("x-amzn-ErrorType", error.code)])
        with self.lock:
            association.tags.update(tags)
            association.modified_at = now_epoch()
        return send_json(start_response, 200, {}, [])

    def eks_handler(
        self, method: str, path: str
    ) -> tuple[Callable[[EksRequest, re.Match[str]], tuple[int, dict[str, Any]]], re.Match[str]] | None:
        """The operation for a method and path, or None when moto should answer."""
        for pattern, operations in self.routes:
            match = pattern.match(path)
            if match is not None and method in operations:
                return operations[method], match
        return None

    # -- moto's clusters -----------------------------------------------------

    def cluster_extras(self, request: EksRequest, name: str) -> tuple[Any, ClusterExtras]:
        """moto's cluster object and our state for it; ResourceNotFound when absent."""
        cluster = moto_cluster(request.account_id, request.region, name)
        if cluster is None:
            raise not_found(f"No cluster found for name: {name}.", clusterName=name)
        extras = self.extras.get(cluster)
        if extras is None:
            extras = ClusterExtras()
            self.extras[cluster] = extras
        return cluster, extras

    # -- Pod Identity associations ---------------------------------------------

    def create_pod_identity_association(self, request: EksRequest, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
        cluster_name = match["cluster"]
        document = request.json_body()
        namespace = text_member(document, "namespace", required=True)
        service_account = text_member(document, "serviceAccount", required=True)
        role_arn = role_arn_member(document, "roleArn", required=True)
        target_role_arn = role_arn_member(document, "targetRoleArn", required=False)
        token = text_member(document, "clientRequestToken", required=False)
        tags = tags_member(document)
        _, extras = self.cluster_extras(request, cluster_name)
        for existing in extras.associations.values():
            if existing.namespace == namespace and existing.service_account == service_account:
                # A retry of the same request (same idempotency token) gets the
                # association it created; anything else is a conflict, as on EKS.
                if token is not None and existing.client_request_token == token:
                    return 200, {"association": existing.to_json()}
                raise in_use(
                    f"Association already exists: {existing.association_id}",
                    clusterName=cluster_name,
                )
        association_id = "a-" + "".join(
            moto_random().choice(ASSOCIATION_ID_ALPHABET) for _ in range(ASSOCIATION_ID_LENGTH)
        )
        moment = now_epoch()
        partition = aws_partition(request.region)
        association = PodIdentityAssociation(
            cluster_name=cluster_name,
            namespace=str(namespace),
            service_account=str(service_account),
            role_arn=str(role_arn),
            association_arn=(
                f"arn:{partition}:eks:{request.region}:{request.account_id}:"
                f"podidentityassociation/{cluster_name}/{association_id}"
            ),
            association_id=association_id,
            tags=tags,
            created_at=moment,
            modified_at=moment,
            disable_session_tags=bool(document.get("disableSessionTags") or False),
            target_role_arn=target_role_arn,
            policy=text_member(document, "policy", required=False),
            client_request_token=token,
        )
        extras.associations[association_id] = association
        return 200, {"association": association.to_json()}

    def list_pod_identity_associations(self, request: EksRequest, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
        _, extras = self.cluster_extras(request, match["cluster"])
        namespace = request.query_value("namespace")
        service_account = request.query_value("serviceAccount")
        matching = [
            association
            for association in extras.associations.values()
            if (not namespace or association.namespace == namespace)
            and (not service_account or association.service_account == service_account)
        ]
        page, next_token = paginate(matching, request, lambda association: association.association_id)
        answer: dict[str, Any] = {"associations": [association.summary() for association in page]}
        if next_token is not None:
            answer["nextToken"] = next_token
        return 200, answer

    def association(self, request: EksRequest, match: re.Match[str]) -> tuple[ClusterExtras, PodIdentityAssociation]:
        cluster_name = match["cluster"]
        _, extras = self.cluster_extras(request, cluster_name)
        association = extras.associations.get(match["item"])
        if association is None:
            raise not_found(
                f"No Pod Identity Association found for id: {match['item']}.",
                clusterName=cluster_name,
            )
        return extras, association

    def describe_pod_identity_association(self, request: EksRequest, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
        _, association = self.association(request, match)
        return 200, {"association": association.to_json()}

    def update_pod_identity_association(self, request: EksRequest, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
        document = request.json_body()
        role_arn = role_arn_member(document, "roleArn", required=False)
        target_role_arn = role_arn_member(document, "targetRoleArn", required=False)
        policy = text_member(document, "policy", required=False)
        _, association = self.association(request, match)
        if role_arn is not None:
            association.role_arn = role_arn
        if target_role_arn is not None:
            association.target_role_arn = target_role_arn
        if policy is not None:
            association.policy = policy
        if document.get("disableSessionTags") is not None:
            association.disable_session_tags = bool(document["disableSessionTags"])
        association.modified_at = now_epoch()
        return 200, {"association": association.to_json()}

    def delete_pod_identity_association(self, request: EksRequest, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
        extras, association = self.association(request, match)
        del extras.associations[association.association_id]
        return 200, {"association": association.to_json()}

    # -- add-ons -------------------------------------------------------------

    def create_addon(self, request: EksRequest, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
        cluster_name = match["cluster"]
        document = request.json_body()
        addon_name = str(text_member(document, "addonName", required=True))
        if document.get("podIdentityAssociations"):
            # Add-on owned associations would need the add-on's namespace, which the
            # sandbox does not know; refusing beats silently creating nothing.
            raise invalid_request(
                "the sandbox does not emulate podIdentityAssociations on CreateAddon; "
                "create the association with CreatePodIdentityAssociation",
                clusterName=cluster_name,
                addonName=addon_name,
            )
        _, extras = self.cluster_extras(request, cluster_name)
        if addon_name in extras.addons:
            raise in_use("Addon already exists.", clusterName=cluster_name, addonName=addon_name)
        moment = now_epoch()
        partition = aws_partition(request.region)
        addon = Addon(
            addon_name=addon_name,
            cluster_name=cluster_name,
            addon_version=text_member(document, "addonVersion", required=False)
            or DEFAULT_ADDON_VERSIONS.get(addon_name, FALLBACK_ADDON_VERSION),
            addon_arn=(
                f"arn:{partition}:eks:{request.region}:{request.account_id}:"
                f"addon/{cluster_name}/{addon_name}/{moto_random().uuid4()}"
            ),
            created_at=moment,
            modified_at=moment,
            # EKS reports CREATING first; the sandbox has no background work to wait
            # for, so the add-on is ready at once.
            status="ACTIVE",
            service_account_role_arn=role_arn_member(document, "serviceAccountRoleArn", required=False),
            configuration_values=text_member(document, "configurationValues", required=False),
            tags=tags_member(document),
        )
        extras.addons[addon_name] = addon
        return 200, {"addon": addon.to_json()}

    def list_addons(self, request: EksRequest, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
        _, extras = self.cluster_extras(request, match["cluster"])
        page, next_token = paginate(list(extras.addons), request, lambda name: name)
        answer: dict[str, Any] = {"addons": page}
        if next_token is not None:
            answer["nextToken"] = next_token
        return 200, answer

    def addon(self, request: EksRequest, match: re.Match[str]) -> tuple[ClusterExtras, Addon]:
        cluster_name = match["cluster"]
        addon_name = match["item"]
        _, extras = self.cluster_extras(request, cluster_name)
        addon = extras.addons.get(addon_name)
        if addon is None:
            raise not_found(
                f"No addon: {addon_name} found in cluster: {cluster_name}",
                clusterName=cluster_name,
                addonName=addon_name,
            )
        return extras, addon

    def describe_addon(self, request: EksRequest, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
        _, addon = self.addon(request, match)
        return 200, {"addon": addon.to_json()}

    def delete_addon(self, request: EksRequest, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
        extras, addon = self.addon(request, match)
        del extras.addons[addon.addon_name]
        # EKS answers with the add-on on its way out; the sandbox removes it at once.
        addon.status = "DELETING"
        addon.modified_at = now_epoch()
        return 200, {"addon": addon.to_json()}

    # -- the sandbox control API ----------------------------------------------

    def handle_control(
        self, method: str, path: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """`/sandbox-api/...`: test knobs, answered with plain JSON and never recorded."""
        endpoint_match = CONTROL_ENDPOINT.match(path)
        status_match = CONTROL_ADDON_STATUS.match(path)
        hang_match = CONTROL_CLOUDWATCH_HANG.match(path)
        evaluate_match = CONTROL_EVALUATE_ALARMS.match(path)
        if endpoint_match is None and status_match is None and hang_match is None and evaluate_match is None:
            return send_json(start_response, 404, {"message": f"no sandbox control API at {path}"}, [])
        if method != "POST":
            return send_json(start_response, 405, {"message": f"{path} accepts POST only"}, [])
        try:
            document = json.loads(read_bodiless_safe(environ) or b"{}")
            if not isinstance(document, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as error:
            return send_json(start_response, 400, {"message": f"the body is not a JSON object: {error}"}, [])
        if evaluate_match is not None:
            at = document.get("at", time.time())
            if isinstance(at, bool) or not isinstance(at, (int, float)) or at != at or abs(at) > 1e11:
                return send_json(start_response, 400, {"message": "`at` must be a time in epoch seconds"}, [])
            scope = {name: document.get(name) for name in ("region", "accountId")}
            if any(value is not None and not isinstance(value, str) for value in scope.values()):
                return send_json(start_response, 400, {"message": "`region` and `accountId` must be strings"}, [])
            alarms = evaluate_all_alarms(float(at), scope["region"], scope["accountId"])
            return send_json(start_response, 200, {"alarms": alarms}, [])
        if hang_match is not None:
            seconds = document.get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 3600:
                return send_json(start_response, 400, {"message": "`seconds` must be a number from 0 to 3600"}, [])
            CLOUDWATCH_HANG.hang_for(float(seconds))
            return send_json(start_response, 200, {"seconds": seconds}, [])
        match = endpoint_match or status_match
        assert match is not None
        clusters = matching_moto_clusters(match["cluster"], document.get("accountId"), document.get("region"))
        if not clusters:
            return send_json(start_response, 404, {"message": f"no cluster named {match['cluster']!r}"}, [])
        if endpoint_match is not None:
            endpoint = document.get("endpoint")
            if not isinstance(endpoint, str) or not endpoint:
                return send_json(start_response, 400, {"message": "`endpoint` must be a non-empty string"}, [])
            # moto serializes the model's attribute in DescribeCluster, so setting it is
            # all it takes; a reset or a new cluster of that name gets moto's default back.
            for cluster in clusters:
                cluster.endpoint = endpoint
            return send_json(start_response, 200, {"clusters": len(clusters), "endpoint": endpoint}, [])
        addon_status = document.get("status")
        if addon_status not in ADDON_STATUSES:
            return send_json(
                start_response, 400, {"message": f"`status` must be one of {sorted(ADDON_STATUSES)}"}, []
            )
        changed = 0
        with self.lock:
            for cluster in clusters:
                extras = self.extras.get(cluster)
                addon = extras.addons.get(match["item"]) if extras is not None else None
                if addon is not None:
                    addon.status = str(addon_status)
                    addon.modified_at = now_epoch()
                    changed += 1
        if changed == 0:
            return send_json(
                start_response, 404, {"message": f"cluster {match['cluster']!r} has no add-on {match['item']!r}"}, []
            )
        return send_json(start_response, 200, {"addons": changed, "status": addon_status}, [])


# The AddonStatus enum of the EKS service model.
ADDON_STATUSES = frozenset(
    ["CREATING", "ACTIVE", "CREATE_FAILED", "UPDATING", "DELETING", "DELETE_FAILED", "DEGRADED", "UPDATE_FAILED"]
)


def read_bodiless_safe(environ: dict[str, Any]) -> bytes:
    """The request body, or nothing when the request announces none.

    Unlike `read_request_body`, which serves CloudWatch's POSTs, this never reads a
    stream without a length: a GET without Content-Length would block until the client
    gave up, since the connection stays open for the answer.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    if length > 0:
        return stream.read(length)
    if environ.get("wsgi.input_terminated"):
        # A chunked body, which the server has already framed for us.
        return stream.read()
    return b""


def request_service(environ: dict[str, Any]) -> str | None:
    """The signing name of a SigV4 request, or None for an unsigned one."""
    found = AWS_REGION_IN_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return found["service"] if found else None


def request_region(environ: dict[str, Any]) -> str:
    """The region the SDK signed the request for, as moto itself reads it."""
    found = AWS_REGION_IN_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return found["region"] if found else DEFAULT_REGION


def request_account(environ: dict[str, Any]) -> str:
    """The account moto would act in, by moto's own precedence: the environment
    variable, the `x-moto-account-id` header, then the access key."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    header = environ.get("HTTP_X_MOTO_ACCOUNT_ID")
    if header:
        return str(header)
    found = ACCESS_KEY_IN_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if found is None:
        return DEFAULT_ACCOUNT_ID
    from moto.iam.models import get_account_id_from

    return get_account_id_from(found["key"])


def moto_random() -> Any:
    """moto's random source, which `/moto-api/seed` makes deterministic; imported late
    like the rest of moto."""
    from moto.moto_api._internal import mock_random

    return mock_random


def aws_partition(region: str) -> str:
    from moto.utilities.utils import get_partition

    return get_partition(region)


def moto_cluster(account_id: str, region: str, name: str) -> Any:
    """moto's model of a cluster, or None. Looking a backend up creates it lazily,
    exactly as a request to moto would."""
    from moto.eks.models import eks_backends

    try:
        return eks_backends[account_id][region].clusters.get(name)
    except KeyError:
        return None


def matching_moto_clusters(name: str, account_id: Any, region: Any) -> list[Any]:
    """Every moto cluster with this name, optionally only in one account or region."""
    from moto.eks.models import eks_backends

    found = []
    # list() copies, since requests in other threads may create backends meanwhile.
    for account, regions in list(eks_backends.items()):
        if account_id is not None and account != account_id:
            continue
        for region_name, backend in list(regions.items()):
            if region is not None and region_name != region:
                continue
            cluster = backend.clusters.get(name)
            if cluster is not None:
                found.append(cluster)
    return found


def record_request(environ: dict[str, Any], body: bytes) -> None:
    """Write a request we answer ourselves into moto's recording, through moto's own
    recorder, so the entry has moto's format and obeys its start/stop switches.

    The recorder reads the body from the request stream itself (as it does for the
    requests moto answers), so the body already read is put back for it first; that
    way a bodiless GET is recorded exactly like moto records its own GETs.
    """
    from moto.core.request import Request
    from moto.moto_api import recorder

    recording_environ = dict(environ)
    recording_environ["wsgi.input"] = io.BytesIO(body)
    recorder._record_request(Request(recording_environ))


def send_json(
    start_response: Callable[..., Any], status_code: int, document: Any, extra_headers: list[tuple[str, str]]
) -> Iterable[bytes]:
    payload = json.dumps(document).encode()
    try:
        reason = HTTPStatus(status_code).phrase
    except ValueError:
        reason = "Error"
    headers = [
        ("Content-Type", EKS_JSON_CONTENT_TYPE),
        ("Content-Length", str(len(payload))),
        ("x-amzn-RequestId", str(moto_random().uuid4())),
    ] + extra_headers
    start_response(f"{status_code} {reason}", headers)
    return [payload]


# ---------------------------------------------------------------------------
# GetMetricWidgetImage, drawn from moto's datapoints
# ---------------------------------------------------------------------------

# CloudWatch's documented limits and defaults for a MetricWidget's image.
WIDGET_DEFAULT_WIDTH = 600
WIDGET_DEFAULT_HEIGHT = 400
WIDGET_MAX_PIXELS = 2000
WIDGET_DEFAULT_START = "-PT3H"
WIDGET_DEFAULT_PERIOD = 300
WIDGET_DEFAULT_STAT = "Average"
ISO_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)
CREDENTIAL_SCOPE = re.compile(r"Credential=(?P<key>[^/,\s]+)/\d{8}/(?P<region>[^/]+)/")


class WidgetError(ValueError):
    """A MetricWidget CloudWatch would refuse; the message says which member and why."""


@dataclasses.dataclass
class WidgetSeries:
    """One line of a metric widget: a metric, or a metric math expression over others."""

    query_id: str
    label: str
    visible: bool
    y_axis: str
    stat: str = ""
    period: int = 0
    namespace: str = ""
    metric_name: str = ""
    dimensions: list[dict[str, str]] = dataclasses.field(default_factory=list)
    expression: str | None = None


def widget_moment(text: Any, now: datetime.datetime, member: str) -> datetime.datetime:
    """`start`/`end` as CloudWatch reads them: an ISO 8601 duration relative to now
    (-PT3H) or an ISO 8601 time."""
    if not isinstance(text, str):
        raise WidgetError(f"`{member}` must be a string such as -PT3H or 2024-01-01T00:00:00Z, not {text!r}")
    match = ISO_DURATION.match(text.strip())
    if match and any(match.group(part) for part in ("weeks", "days", "hours", "minutes", "seconds")):
        delta = datetime.timedelta(
            weeks=int(match.group("weeks") or 0),
            days=int(match.group("days") or 0),
            hours=int(match.group("hours") or 0),
            minutes=int(match.group("minutes") or 0),
            seconds=int(match.group("seconds") or 0),
        )
        return now - delta if match.group("sign") else now + delta
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise WidgetError(f"`{member}` is neither an ISO 8601 duration (-PT3H) nor an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def widget_pixels(widget: dict[str, Any], member: str, default: int) -> int:
    value = widget.get(member, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= WIDGET_MAX_PIXELS:
        raise WidgetError(f"`{member}` must be a whole number of pixels from 1 to {WIDGET_MAX_PIXELS}, not {value!r}")
    return value


def widget_series(widget: dict[str, Any]) -> list[WidgetSeries]:
    """The widget's `metrics` rows, as CloudWatch's metric widget structure documents them:
    `[namespace, name, dimension name, dimension value, ..., {options}]`, where "." repeats
    the previous row's item at that place, or `[{"expression": ..., options}]`."""
    rows = widget.get("metrics")
    if not isinstance(rows, list) or not rows:
        raise WidgetError("`metrics` must be a non-empty array of metric rows")
    default_stat = widget.get("stat", WIDGET_DEFAULT_STAT)
    default_period = widget.get("period", WIDGET_DEFAULT_PERIOD)
    series: list[WidgetSeries] = []
    previous: list[Any] = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, list) or not row:
            raise WidgetError(f"`metrics[{number - 1}]` must be a non-empty array")
        options = row[-1] if isinstance(row[-1], dict) else {}
        items = row[:-1] if isinstance(row[-1], dict) else row
        visible = options.get("visible", True) is not False
        y_axis = options.get("yAxis", "left")
        if "expression" in options:
            series.append(
                WidgetSeries(
                    query_id=str(options.get("id") or f"e{number}"),
                    label=str(options.get("label") or options["expression"]),
                    visible=visible,
                    y_axis=y_axis,
                    expression=str(options["expression"]),
                )
            )
            continue
        resolved = [previous[index] if item == "." and index < len(previous) else item for index, item in enumerate(items)]
        if len(resolved) < 2 or len(resolved) % 2 != 0 or not all(isinstance(item, str) for item in resolved):
            raise WidgetError(
                f"`metrics[{number - 1}]` must be [namespace, metric name, dimension name, dimension value, ...] "
                f"strings with an optional options object last, not {row!r}"
            )
        previous = resolved
        dimensions = [{"Name": resolved[i], "Value": resolved[i + 1]} for i in range(2, len(resolved), 2)]
        series.append(
            WidgetSeries(
                query_id=str(options.get("id") or f"m{number}"),
                label=str(options.get("label") or resolved[1]),
                visible=visible,
                y_axis=y_axis,
                stat=str(options.get("stat", default_stat)),
                period=int(options.get("period", default_period)),
                namespace=resolved[0],
                metric_name=resolved[1],
                dimensions=dimensions,
            )
        )
    return series


def evaluate_expression(expression: str, values: dict[str, dict[float, float]]) -> dict[float, float] | None:
    """Evaluates simple metric math: + - * / and unary minus over numbers and query ids
    (`100 * assigned / capacity`), point by point on the timestamps all operands share.
    None when the expression uses anything else (functions, unknown ids): the widget then
    lists it in its legend as not drawn rather than drawing something wrong."""
    import ast

    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        return None

    def names(node: ast.AST) -> set[str] | None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            left, right = names(node.left), names(node.right)
            return None if left is None or right is None else left | right
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return names(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return set()
        if isinstance(node, ast.Name) and node.id in values:
            return {node.id}
        return None

    used = names(tree)
    if used is None:
        return None

    def at(node: ast.AST, moment: float) -> float:
        if isinstance(node, ast.BinOp):
            left, right = at(node.left, moment), at(node.right, moment)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            return left / right  # Division by zero is caught below: no point there.
        if isinstance(node, ast.UnaryOp):
            operand = at(node.operand, moment)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Constant):
            return float(node.value)
        assert isinstance(node, ast.Name)
        return values[node.id][moment]

    moments = set.intersection(*(set(values[name]) for name in used)) if used else set()
    result: dict[float, float] = {}
    for moment in sorted(moments):
        try:
            result[moment] = at(tree, moment)
        except ZeroDivisionError:
            continue
    return result


def request_account_and_region(environ: dict[str, Any]) -> tuple[str, str]:
    """The account and region moto would serve this request from: the region of the
    SigV4 credential scope, the account its access key maps to."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import get_account_id_from

    match = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None:
        return DEFAULT_ACCOUNT_ID, "us-east-1"
    return get_account_id_from(match.group("key")), match.group("region")


def widget_datapoints(
    series: list[WidgetSeries], environ: dict[str, Any], start: datetime.datetime, end: datetime.datetime
) -> dict[str, dict[float, float]]:
    """Each metric's datapoints (epoch seconds -> value), read from moto's CloudWatch
    backend for the request's account and region. The backend is called directly rather
    than through a GetMetricData request so that moto's recording holds only the calls
    clients made."""
    from moto.cloudwatch.models import cloudwatch_backends

    account, region = request_account_and_region(environ)
    backend = cloudwatch_backends[account][region]
    queries = [
        {
            "Id": item.query_id,
            "MetricStat": {
                "Metric": {"Namespace": item.namespace, "MetricName": item.metric_name, "Dimensions": item.dimensions},
                "Period": item.period,
                "Stat": item.stat,
            },
            "ReturnData": True,
        }
        for item in series
        if item.expression is None
    ]
    # moto compares these with the naive UTC timestamps it stores.
    naive_start = start.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    naive_end = end.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    results = backend.get_metric_data(queries, naive_start, naive_end, "TimestampAscending") if queries else []
    values: dict[str, dict[float, float]] = {}
    for result in results:
        values[result["id"]] = {
            epoch_seconds(moment): float(value) for moment, value in zip(result["timestamps"], result["values"])
        }
    return values


def draw_widget(widget: dict[str, Any], environ: dict[str, Any]) -> bytes:
    """A PNG of the widget, `width` x `height` pixels, drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # No display in the sandbox; Agg only renders to memory.
    from matplotlib.dates import DateFormatter
    from matplotlib.figure import Figure

    width = widget_pixels(widget, "width", WIDGET_DEFAULT_WIDTH)
    height = widget_pixels(widget, "height", WIDGET_DEFAULT_HEIGHT)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = widget_moment(widget.get("start", WIDGET_DEFAULT_START), now, "start")
    end = widget_moment(widget.get("end"), now, "end") if "end" in widget else now
    if start >= end:
        raise WidgetError(f"`start` ({start.isoformat()}) must be before `end` ({end.isoformat()})")
    series = widget_series(widget)
    values = widget_datapoints(series, environ, start, end)
    notes: list[str] = []
    for item in series:
        if item.expression is not None:
            evaluated = evaluate_expression(item.expression, values)
            if evaluated is None:
                notes.append(f"{item.label}: expression not drawn (only + - * / over ids)")
            else:
                values[item.query_id] = evaluated

    # Figure, not pyplot: pyplot keeps global state, and each request has its own thread.
    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    axes = {"left": figure.add_subplot()}
    if any(item.visible and item.y_axis == "right" for item in series):
        axes["right"] = axes["left"].twinx()
    drawn = 0
    lines = 0
    for item in series:
        points = values.get(item.query_id)
        if not item.visible or points is None:
            continue
        moments = sorted(points)
        axes.get(item.y_axis, axes["left"]).plot(
            [datetime.datetime.fromtimestamp(moment, datetime.timezone.utc) for moment in moments],
            [points[moment] for moment in moments],
            marker="." if len(moments) < 30 else None,
            # One colour cycle across both axes: each axes would restart its own.
            color=f"C{lines % 10}",
            label=item.label,
        )
        lines += 1
        drawn += len(moments)
    for annotation in (widget.get("annotations") or {}).get("horizontal") or []:
        if isinstance(annotation, dict) and isinstance(annotation.get("value"), (int, float)):
            axes["left"].axhline(annotation["value"], color="tab:red", linestyle="--", label=annotation.get("label"))
    y_axis = widget.get("yAxis") or {}
    stat = widget.get("stat", WIDGET_DEFAULT_STAT)
    for side, side_axes in axes.items():
        settings = y_axis.get(side) or {}
        low, high = settings.get("min"), settings.get("max")
        if low is not None or high is not None:
            side_axes.set_ylim(bottom=low, top=high)
        side_axes.set_ylabel(settings.get("label") or stat, fontsize="small")
    axes["left"].set_xlim(start, end)
    axes["left"].xaxis.set_major_formatter(DateFormatter("%H:%M"))
    axes["left"].set_xlabel("time (UTC)", fontsize="small")
    axes["left"].set_title(str(widget.get("title") or ""), fontsize="medium")
    axes["left"].tick_params(labelsize="x-small")
    if drawn == 0:
        axes["left"].text(0.5, 0.5, "No data available.", transform=axes["left"].transAxes, ha="center")
    handles, labels = [], []
    for side_axes in axes.values():
        more_handles, more_labels = side_axes.get_legend_handles_labels()
        handles += more_handles
        labels += more_labels
    if notes:
        from matplotlib.lines import Line2D

        handles += [Line2D([], [], linestyle="none") for _ in notes]
        labels += notes
    if handles:
        axes["left"].legend(handles, labels, fontsize="x-small", loc="upper left")
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=dpi)
    return image.getvalue()


# ---------------------------------------------------------------------------
# CloudWatch metric alarms: moto's gaps, and their evaluation
# ---------------------------------------------------------------------------

CONTROL_EVALUATE_ALARMS = re.compile(r"^/sandbox-api/cloudwatch/evaluate-alarms/?$")
ALARM_NAME_MAX_LENGTH = 255
DESCRIBE_ALARMS_MAX_RECORDS = (1, 100)
DESCRIBE_ALARMS_DEFAULT_RECORDS = 50
ALARM_STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")
TREAT_MISSING_DATA = ("missing", "ignore", "breaching", "notBreaching")
# ComparisonOperator -> (test, the words CloudWatch's state reason uses).
COMPARISONS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanThreshold": (lambda value, threshold: value > threshold, "greater than"),
    "GreaterThanOrEqualToThreshold": (lambda value, threshold: value >= threshold, "greater than or equal to"),
    "LessThanThreshold": (lambda value, threshold: value < threshold, "less than"),
    "LessThanOrEqualToThreshold": (lambda value, threshold: value <= threshold, "less than or equal to"),
}
# The ComparisonOperator enum; the last three are anomaly detection's, which the sandbox
# accepts but does not evaluate.
COMPARISON_OPERATORS = tuple(COMPARISONS) + (
    "LessThanLowerOrGreaterThanUpperThreshold",
    "LessThanLowerThreshold",
    "GreaterThanUpperThreshold",
)
# One lock for the alarm fixes and the evaluation: an evaluation reads an alarm and may
# set its state, which a concurrent PutMetricAlarm must not interleave with.
ALARMS_LOCK = threading.RLock()


def alarm_validation_error(message: str) -> Exception:
    from moto.cloudwatch.exceptions import ValidationError

    return ValidationError(message)


def query_returns_data(query: Any) -> bool:
    """A MetricDataQuery's ReturnData, which defaults to true (moto keeps None then)."""
    value = getattr(query, "return_data", None)
    return True if value is None else parse_boolean(value)


def check_metric_alarm(name: Any, kwargs: dict[str, Any]) -> None:
    """The checks CloudWatch makes on PutMetricAlarm that moto 5.2.5 skips."""
    if not isinstance(name, str) or not 1 <= len(name) <= ALARM_NAME_MAX_LENGTH:
        raise alarm_validation_error(
            f"1 validation error detected: Value '{name}' at 'alarmName' failed to satisfy constraint: "
            f"Member must have length between 1 and {ALARM_NAME_MAX_LENGTH}"
        )
    if kwargs.get("rule") is not None:
        return  # A composite alarm (PutCompositeAlarm).
    evaluation_periods = kwargs.get("evaluation_periods")
    datapoints = kwargs.get("datapoints_to_alarm")
    if evaluation_periods is None or int(evaluation_periods) < 1:
        raise alarm_validation_error(
            "1 validation error detected: Value at 'evaluationPeriods' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1"
        )
    if datapoints is not None and not 1 <= int(datapoints) <= int(evaluation_periods):
        raise alarm_validation_error(
            f"DatapointsToAlarm ({datapoints}) must be between 1 and EvaluationPeriods ({evaluation_periods})."
        )
    treat = kwargs.get("treat_missing_data")
    if treat is not None and treat not in TREAT_MISSING_DATA:
        raise alarm_validation_error(
            f"1 validation error detected: Value '{treat}' at 'treatMissingData' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{', '.join(TREAT_MISSING_DATA)}]"
        )
    if kwargs.get("comparison_operator") not in COMPARISON_OPERATORS:
        raise alarm_validation_error(
            f"1 validation error detected: Value '{kwargs.get('comparison_operator')}' at 'comparisonOperator' "
            f"failed to satisfy constraint: Member must satisfy enum value set: [{', '.join(COMPARISON_OPERATORS)}]"
        )
    queries = kwargs.get("metric_data_queries") or []
    if queries:
        if kwargs.get("metric_name") or kwargs.get("namespace") or kwargs.get("statistic"):
            from moto.cloudwatch.exceptions import InvalidParameterCombination

            raise InvalidParameterCombination(
                "The parameters MetricName, Namespace and Statistic cannot be combined with Metrics."
            )
        if sum(1 for query in queries if query_returns_data(query)) != 1:
            raise alarm_validation_error("Exactly one element of the metrics list should return data.")
    elif not kwargs.get("metric_name"):
        raise alarm_validation_error("Either MetricName or Metrics must be specified.")


def fix_cloudwatch_alarms() -> None:
    """What moto 5.2.5 gets wrong about metric alarms, fixed on its own backend and
    response classes, so every protocol (CBOR, JSON, query) sees the same alarms:

    * A new alarm starts in INSUFFICIENT_DATA (moto: OK), with StateTransitionedTimestamp.
    * PutMetricAlarm on an existing name updates it: the configuration is replaced, the
      state (value, reason, timestamps, history) is kept, and `Tags` are ignored, as
      CloudWatch ignores them on update (moto resets the state and merges the tags).
    * DeleteAlarms deletes the alarm's tags too (moto keeps them, and a new alarm of the
      same name would inherit them).
    * ListTagsForResource and UntagResource answer ResourceNotFoundException for an ARN
      that is no alarm or insight rule (moto listed no tags, and refused to untag an
      existing alarm that had none).
    * DescribeAlarms combines its filters, answers composite alarms only when AlarmTypes
      asks for them (moto always does), sorts by name and pages with MaxRecords/NextToken.
    * The checks above in `check_metric_alarm`.
    """
    from moto.cloudwatch.models import CloudWatchBackend
    from moto.cloudwatch.responses import CloudWatchResponse
    from moto.core.responses import ActionResult

    original_put = CloudWatchBackend.put_metric_alarm
    original_delete = CloudWatchBackend.delete_alarms

    def put_metric_alarm(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = kwargs.get("name", args[0] if args else None)
        check_metric_alarm(name, kwargs)
        with ALARMS_LOCK:
            existing = self.alarms.get(name)
            if existing is not None:
                kwargs["tags"] = None
            alarm = original_put(self, *args, **kwargs)
            if existing is None:
                alarm.state_value = "INSUFFICIENT_DATA"
                alarm.state_transitioned_timestamp = alarm.state_updated_timestamp
            else:
                for attribute in (
                    "state_value",
                    "state_reason",
                    "state_reason_data",
                    "state_updated_timestamp",
                    "history",
                ):
                    setattr(alarm, attribute, getattr(existing, attribute))
                alarm.state_transitioned_timestamp = getattr(
                    existing, "state_transitioned_timestamp", existing.state_updated_timestamp
                )
            return alarm

    def delete_alarms(self: Any, alarm_names: list[str]) -> None:
        with ALARMS_LOCK:
            for name in alarm_names:
                alarm = self.alarms.get(name)
                if alarm is not None:
                    self.tagger.delete_all_tags_for_resource(alarm.alarm_arn)
            original_delete(self, alarm_names)

    def describe_alarms(self: Any) -> Any:
        names = self._get_param("AlarmNames", [])
        prefix = self._get_param("AlarmNamePrefix")
        action_prefix = self._get_param("ActionPrefix")
        state_value = self._get_param("StateValue")
        alarm_types = self._get_param("AlarmTypes", []) or ["MetricAlarm"]
        if names and prefix:
            from moto.cloudwatch.exceptions import InvalidParameterCombination

            raise InvalidParameterCombination("AlarmNamePrefix and AlarmNames cannot be used together.")
        max_records = self._get_param("MaxRecords")
        max_records = DESCRIBE_ALARMS_DEFAULT_RECORDS if max_records is None else int(max_records)
        if not DESCRIBE_ALARMS_MAX_RECORDS[0] <= max_records <= DESCRIBE_ALARMS_MAX_RECORDS[1]:
            raise alarm_validation_error(
                f"1 validation error detected: Value '{max_records}' at 'maxRecords' failed to satisfy "
                f"constraint: Member must have value between {DESCRIBE_ALARMS_MAX_RECORDS[0]} and "
                f"{DESCRIBE_ALARMS_MAX_RECORDS[1]}"
            )
        with ALARMS_LOCK:
            alarms = sorted(self.cloudwatch_backend.alarms.values(), key=lambda alarm: alarm.name)
        alarms = [
            alarm
            for alarm in alarms
            if (not names or alarm.name in names)
            and (not prefix or alarm.name.startswith(prefix))
            and (not action_prefix or any(action.startswith(action_prefix) for action in alarm.alarm_actions))
            and (not state_value or alarm.state_value == state_value)
            and ("CompositeAlarm" if alarm.rule is not None else "MetricAlarm") in alarm_types
        ]
        token = self._get_param("NextToken")
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except ValueError as error:
                from moto.cloudwatch.exceptions import InvalidParameterValue

                raise InvalidParameterValue("The value for parameter NextToken is not valid.") from error
            alarms = [alarm for alarm in alarms if alarm.name > after]
        page = alarms[:max_records]
        result: dict[str, Any] = {
            "MetricAlarms": [alarm for alarm in page if alarm.rule is None],
            "CompositeAlarms": [alarm for alarm in page if alarm.rule is not None],
        }
        if len(alarms) > max_records:
            result["NextToken"] = base64.urlsafe_b64encode(page[-1].name.encode()).decode()
        return ActionResult(result)

    def taggable(self: Any, arn: str) -> None:
        """ResourceNotFoundException unless `arn` is an alarm or insight rule of this backend."""
        from moto.cloudwatch.exceptions import ResourceNotFoundException

        known = {alarm.alarm_arn for alarm in list(self.alarms.values())}
        known |= {getattr(rule, "rule_arn", None) for rule in list(self.insight_rules.values())}
        if arn not in known:
            raise ResourceNotFoundException("The specified resource does not exist.")

    def list_tags_for_resource(self: Any, arn: str) -> dict[str, str]:
        taggable(self, arn)
        return self.tagger.get_tag_dict_for_resource(arn)

    def untag_resource(self: Any, arn: str, tag_keys: list[str]) -> None:
        taggable(self, arn)
        self.tagger.untag_resource_using_names(arn, tag_keys)

    CloudWatchBackend.put_metric_alarm = put_metric_alarm
    CloudWatchBackend.delete_alarms = delete_alarms
    CloudWatchBackend.list_tags_for_resource = list_tags_for_resource
    CloudWatchBackend.untag_resource = untag_resource
    CloudWatchResponse.describe_alarms = describe_alarms


@dataclasses.dataclass
class AlarmQuery:
    """One query of an alarm: a metric's statistic, or an expression over other ids."""

    query_id: str
    return_data: bool
    expression: str | None = None
    namespace: str | None = None
    metric_name: str | None = None
    dimensions: frozenset[tuple[str, str]] = frozenset()
    period: int | None = None
    stat: str | None = None


def alarm_queries(alarm: Any) -> list[AlarmQuery]:
    """An alarm's queries; a single-metric alarm is one query `m1`."""
    if not alarm.metric_data_queries:
        return [
            AlarmQuery(
                query_id="m1",
                return_data=True,
                namespace=alarm.namespace,
                metric_name=alarm.metric_name,
                dimensions=frozenset((dimension.name, dimension.value) for dimension in alarm.dimensions),
                period=int(alarm.period) if alarm.period is not None else None,
                stat=alarm.extended_statistic or alarm.statistic,
            )
        ]
    queries = []
    for query in alarm.metric_data_queries:
        stat = query.metric_stat
        queries.append(
            AlarmQuery(
                query_id=str(query.id),
                return_data=query_returns_data(query),
                expression=query.expression,
                namespace=stat.metric.namespace if stat else None,
                metric_name=stat.metric.metric_name if stat else None,
                dimensions=frozenset((d.name, d.value) for d in stat.metric.dimensions) if stat else frozenset(),
                period=int(stat.period) if stat and stat.period is not None else (
                    int(query.period) if query.period is not None else None
                ),
                stat=stat.stat if stat else None,
            )
        )
    return queries


def datum_moment(datum: Any) -> float:
    return float(epoch_seconds(datum.timestamp))


def statistic_of(datums: list[Any], stat: str) -> float | None:
    """CloudWatch's statistic over the datums of one period, or None without data."""
    values = [float(datum.value) for datum in datums if hasattr(datum, "value")]
    aggregates = [datum for datum in datums if not hasattr(datum, "value")]
    count = len(values) + sum(float(datum.sample_count) for datum in aggregates)
    if count == 0:
        return None
    total = sum(values) + sum(float(datum.sum) for datum in aggregates)
    if stat == "SampleCount":
        return count
    if stat == "Sum":
        return total
    if stat == "Average":
        return total / count
    if stat == "Maximum":
        return max(values + [float(datum.max) for datum in aggregates])
    if stat == "Minimum":
        return min(values + [float(datum.min) for datum in aggregates])
    percentile = re.fullmatch(r"p(\d+(?:\.\d+)?)", stat or "")
    if percentile is not None and values:
        # Nearest rank over the single values (statistic sets carry no distribution).
        ranked = sorted(values)
        rank = max(1, int(-(-float(percentile[1]) * len(ranked) // 100)))
        return ranked[min(rank, len(ranked)) - 1]
    return None


def alarm_values(alarm: Any, backend: Any, at: float) -> tuple[list[float | None], int, str | None]:
    """The value of the alarm's ReturnData query in each of its last EvaluationPeriods
    periods, newest first (None: no datapoint), the period, and a problem, if any."""
    queries = alarm_queries(alarm)
    periods = [query.period for query in queries if query.period]
    period = next((query.period for query in queries if query.return_data and query.period), None)
    period = period or (min(periods) if periods else 60)
    count = int(alarm.evaluation_periods)
    starts = [at - k * period for k in range(1, count + 1)]
    datums = [
        datum
        for datum in list(backend.metric_data)
        if at - count * period <= datum_moment(datum) < at
    ]
    values: dict[str, dict[float, float]] = {}
    for query in queries:
        if query.expression is not None:
            continue
        selected = [
            datum
            for datum in datums
            if datum.namespace == query.namespace
            and datum.name == query.metric_name
            and frozenset((d.name, d.value) for d in datum.dimensions) == query.dimensions
        ]
        series: dict[float, float] = {}
        for start in starts:
            value = statistic_of(
                [datum for datum in selected if start <= datum_moment(datum) < start + period], str(query.stat)
            )
            if value is not None:
                series[start] = value
        values[query.query_id] = series
    pending = [query for query in queries if query.expression is not None]
    # Expressions may use other expressions' ids: evaluate whatever can be, until done.
    while pending:
        waiting = []
        for query in pending:
            result = evaluate_expression(str(query.expression), values)
            if result is None:
                waiting.append(query)
            else:
                values[query.query_id] = result
        if len(waiting) == len(pending):
            return [None] * count, period, f"the sandbox cannot evaluate the expression {waiting[0].expression!r}"
        pending = waiting
    returned = next((query for query in queries if query.return_data), queries[0])
    series = values.get(returned.query_id, {})
    return [series.get(start) for start in starts], period, None


def reason_time(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime("%d/%m/%y %H:%M:%S")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def evaluate_alarm(alarm: Any, backend: Any, at: float) -> dict[str, Any]:
    """Evaluates one metric alarm as of `at` and sets its state when it changes."""
    values, period, problem = alarm_values(alarm, backend, at)
    if alarm.comparison_operator not in COMPARISONS:
        problem = f"the sandbox does not evaluate {alarm.comparison_operator} (anomaly detection) alarms"
    count = len(values)
    needed = int(alarm.datapoints_to_alarm or count)
    treat = alarm.treat_missing_data or "missing"
    threshold = float(alarm.threshold) if alarm.threshold is not None else 0.0
    test, words = COMPARISONS.get(alarm.comparison_operator) or COMPARISONS["GreaterThanThreshold"]
    starts = [at - k * period for k in range(1, count + 1)]
    present = [(start, value) for start, value in zip(starts, values) if value is not None]
    breaching = [(start, value) for start, value in present if test(value, threshold)]
    previous = alarm.state_value

    def shown(points: list[tuple[float, float]]) -> str:
        return ", ".join(f"{value} ({reason_time(start)})" for start, value in points)

    if problem is not None:
        state, reason = "INSUFFICIENT_DATA", f"Unchecked: {problem}"
    elif not present:
        if treat == "ignore":
            state = previous
            reason = alarm.state_reason
        else:
            state = {"missing": "INSUFFICIENT_DATA", "breaching": "ALARM", "notBreaching": "OK"}[treat]
            treated = {"missing": "Missing", "breaching": "Breaching", "notBreaching": "NonBreaching"}[treat]
            if treat == "missing":
                reason = f"Insufficient Data: {plural(count, 'datapoint')} {'was' if count == 1 else 'were'} unknown."
            else:
                reason = (
                    f"Threshold Crossed: no datapoints were received for {plural(count, 'period')} and "
                    f"{count} missing {'datapoint was' if count == 1 else 'datapoints were'} treated as [{treated}]."
                )
    else:
        # Missing datapoints count as breaching only when TreatMissingData says so.
        missing = count - len(present)
        breaching_count = len(breaching) + (missing if treat == "breaching" else 0)
        if breaching_count >= needed:
            state = "ALARM"
            reason = (
                f"Threshold Crossed: {breaching_count} out of the last {count} datapoints "
                f"[{shown(breaching)}] {'was' if breaching_count == 1 else 'were'} {words} the threshold "
                f"({threshold}) (minimum {plural(needed, 'datapoint')} for {previous} -> ALARM transition)."
            )
        else:
            state = "OK"
            calm = [(start, value) for start, value in present if not test(value, threshold)]
            reason = (
                f"Threshold Crossed: {plural(len(calm), 'datapoint')} [{shown(calm)}] "
                f"{'was' if len(calm) == 1 else 'were'} not {words} the threshold ({threshold}) "
                f"(minimum {plural(count - needed + 1, 'datapoint')} for {previous} -> OK transition)."
            )
    changed = state != previous
    if changed:
        reason_data = json.dumps(
            {
                "version": "1.0",
                "queryDate": datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat(),
                "period": period,
                "recentDatapoints": [value for value in reversed(values) if value is not None],
                "threshold": threshold,
                "evaluatedDatapoints": [
                    {"timestamp": datetime.datetime.fromtimestamp(start, datetime.timezone.utc).isoformat(), "value": value}
                    for start, value in present
                ],
            }
        )
        backend.set_alarm_state(alarm.name, reason, reason_data, state)
        alarm.state_transitioned_timestamp = alarm.state_updated_timestamp
    return {
        "alarmName": alarm.name,
        "region": alarm.region_name,
        "state": state,
        "reason": reason,
        "changed": changed,
    }


def evaluate_all_alarms(at: float, region: str | None, account_id: str | None) -> list[dict[str, Any]]:
    """Every metric alarm (of one region and account, when given) evaluated as of `at`."""
    from moto.cloudwatch.models import cloudwatch_backends

    answers = []
    with ALARMS_LOCK:
        for account, regions in list(cloudwatch_backends.items()):
            if account_id is not None and account != account_id:
                continue
            for region_name, backend in list(regions.items()):
                if region is not None and region_name != region:
                    continue
                for alarm in sorted(backend.alarms.values(), key=lambda alarm: alarm.name):
                    if alarm.rule is None:
                        answers.append(evaluate_alarm(alarm, backend, at))
    return answers


# ---------------------------------------------------------------------------
# IAM SimulatePrincipalPolicy, which moto lacks
# ---------------------------------------------------------------------------

IAM_XML_NAMESPACE = "https://iam.amazonaws.com/doc/2010-05-08/"
IAM_PRINCIPAL_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):(?P<kind>user|role|group)/(?P<path>.+)$")


class IamError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def wildcard_pattern(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters, `?` any one character."""
    text = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.compile(f"^{text}$", re.DOTALL if case_sensitive else re.DOTALL | re.IGNORECASE)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def statement_matches(statement: dict[str, Any], action: str, resource: str) -> bool:
    """Whether a statement applies to an action on a resource, its Condition aside."""
    if "Action" in statement:
        if not any(wildcard_pattern(str(item), False).match(action) for item in as_list(statement["Action"])):
            return False
    elif "NotAction" in statement:
        if any(wildcard_pattern(str(item), False).match(action) for item in as_list(statement["NotAction"])):
            return False
    else:
        return False
    if "Resource" in statement:
        return any(wildcard_pattern(str(item), True).match(resource) for item in as_list(statement["Resource"]))
    if "NotResource" in statement:
        return not any(wildcard_pattern(str(item), True).match(resource) for item in as_list(statement["NotResource"]))
    return False


def number_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# Condition operators the simulation evaluates: name -> (negated, test of one context
# value against one policy value). The negated ones hold when no policy value matches.
CONDITION_TESTS: dict[str, tuple[bool, Callable[[str, str], bool]]] = {
    "StringEquals": (False, lambda value, wanted: value == wanted),
    "StringNotEquals": (True, lambda value, wanted: value == wanted),
    "StringEqualsIgnoreCase": (False, lambda value, wanted: value.lower() == wanted.lower()),
    "StringNotEqualsIgnoreCase": (True, lambda value, wanted: value.lower() == wanted.lower()),
    "StringLike": (False, lambda value, wanted: bool(wildcard_pattern(wanted, True).match(value))),
    "StringNotLike": (True, lambda value, wanted: bool(wildcard_pattern(wanted, True).match(value))),
    "ArnEquals": (False, lambda value, wanted: bool(wildcard_pattern(wanted, True).match(value))),
    "ArnLike": (False, lambda value, wanted: bool(wildcard_pattern(wanted, True).match(value))),
    "ArnNotEquals": (True, lambda value, wanted: bool(wildcard_pattern(wanted, True).match(value))),
    "ArnNotLike": (True, lambda value, wanted: bool(wildcard_pattern(wanted, True).match(value))),
    "Bool": (False, lambda value, wanted: value.lower() == wanted.lower()),
    "NumericEquals": (False, lambda value, wanted: number_or_none(value) == number_or_none(wanted) is not None),
    "NumericNotEquals": (True, lambda value, wanted: number_or_none(value) == number_or_none(wanted) is not None),
    "NumericLessThan": (False, lambda value, wanted: (number_or_none(value) or 0) < (number_or_none(wanted) or 0)),
    "NumericLessThanEquals": (False, lambda value, wanted: (number_or_none(value) or 0) <= (number_or_none(wanted) or 0)),
    "NumericGreaterThan": (False, lambda value, wanted: (number_or_none(value) or 0) > (number_or_none(wanted) or 0)),
    "NumericGreaterThanEquals": (
        False,
        lambda value, wanted: (number_or_none(value) or 0) >= (number_or_none(wanted) or 0),
    ),
}


def condition_holds(statement: dict[str, Any], context: dict[str, list[str]], missing: list[str]) -> bool:
    """Whether a statement's Condition holds in the simulation's context (ContextEntries),
    as IAM decides it: every operator and every key must hold; a key the context lacks
    fails its test (but `...IfExists` and `Null` hold) and is added to `missing`, as the
    simulator reports it. Operators the sandbox does not evaluate (Date*, IpAddress,
    NotIpAddress, BinaryEquals) fail too, their keys added to `missing`."""
    condition = statement.get("Condition")
    if not isinstance(condition, dict):
        return True
    holds = True
    for operator, tests in condition.items():
        if not isinstance(tests, dict):
            continue
        name = str(operator)
        set_operator = None
        if ":" in name:
            set_operator, name = name.split(":", 1)
        if_exists = name.endswith("IfExists")
        name = name[: -len("IfExists")] if if_exists else name
        for key, wanted in tests.items():
            wanted_values = [str(item).lower() if isinstance(item, bool) else str(item) for item in as_list(wanted)]
            values = context.get(str(key).lower())
            if name == "Null":
                holds = holds and ((values is None) == (wanted_values[:1] == ["true"]))
                continue
            if values is None:
                if not if_exists:
                    if str(key) not in missing:
                        missing.append(str(key))
                    holds = False
                continue
            test = CONDITION_TESTS.get(name)
            if test is None:
                if str(key) not in missing:
                    missing.append(str(key))
                holds = False
                continue
            negated, matches = test
            matched = [any(matches(value, item) for item in wanted_values) for value in values]
            if set_operator == "ForAllValues":
                result = all(not hit for hit in matched) if negated else all(matched)
            else:
                result = not any(matched) if negated else any(matched)
            holds = holds and result
    return holds


def policy_document(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    raw = str(text)
    try:
        document = json.loads(raw)
    except ValueError:
        document = json.loads(urllib.parse.unquote(raw))
    return document if isinstance(document, dict) else {}


@dataclasses.dataclass
class SourcePolicy:
    policy_id: str
    policy_type: str  # The PolicySourceType enum: user, group, role, aws-managed, user-managed.
    document: dict[str, Any]


def principal_policies(arn: str) -> list[SourcePolicy]:
    """The identity policies of a user (with its groups'), role or group in moto's IAM."""
    from moto.iam.models import iam_backends

    match = IAM_PRINCIPAL_ARN.match(arn)
    if match is None:
        raise IamError(400, "InvalidInput", f"Invalid ARN: {arn} is not the ARN of an IAM user, role or group.")
    kind = match["kind"]
    name = match["path"].rsplit("/", 1)[-1]
    backend = iam_backends[match["account"]][match["partition"]]
    if kind == "role":
        principal = next((role for role in list(backend.roles.values()) if role.arn == arn), None)
    elif kind == "user":
        principal = next((user for user in list(backend.users.values()) if user.arn == arn), None)
    else:
        principal = next((group for group in list(backend.groups.values()) if group.arn == arn), None)
    if principal is None:
        raise IamError(404, "NoSuchEntity", f"The {kind} with name {name} cannot be found.")
    holders = [(principal, kind)]
    if kind == "user":
        holders += [(group, "group") for group in list(backend.groups.values()) if principal in group.users]
    policies = []
    for holder, holder_type in holders:
        for policy_name, text in list(holder.policies.items()):
            policies.append(SourcePolicy(policy_name, holder_type, policy_document(text)))
        for policy in list(holder.managed_policies.values()):
            version = next((version for version in policy.versions if version.is_default), policy.versions[-1])
            managed_type = "aws-managed" if ":iam::aws:policy/" in policy.arn else "user-managed"
            policies.append(SourcePolicy(policy.name, managed_type, policy_document(version.document)))
    return policies


def simulate(
    policies: list[SourcePolicy], action: str, resource: str, context: dict[str, list[str]]
) -> dict[str, Any]:
    """IAM's decision for one action on one resource: an explicit Deny wins, then an Allow;
    otherwise the implicit deny. A statement applies when its action, resource and
    Condition (`condition_holds`, against the ContextEntries) do."""
    allows: list[SourcePolicy] = []
    denies: list[SourcePolicy] = []
    missing: list[str] = []
    for policy in policies:
        for statement in as_list(policy.document.get("Statement")):
            if not isinstance(statement, dict) or not statement_matches(statement, action, resource):
                continue
            if not condition_holds(statement, context, missing):
                continue
            effect = statement.get("Effect")
            if effect == "Deny":
                denies.append(policy)
            elif effect == "Allow":
                allows.append(policy)
    if denies:
        decision, matched = "explicitDeny", denies
    elif allows:
        decision, matched = "allowed", allows
    else:
        decision, matched = "implicitDeny", []
    return {"action": action, "resource": resource, "decision": decision, "matched": matched, "missing": missing}


def xml_text(value: Any) -> str:
    from xml.sax.saxutils import escape

    return escape(str(value))


def simulation_xml(results: list[dict[str, Any]], request_id: str) -> str:
    members = []
    for result in results:
        matched = "".join(
            f"<member><SourcePolicyId>{xml_text(policy.policy_id)}</SourcePolicyId>"
            f"<SourcePolicyType>{policy.policy_type}</SourcePolicyType></member>"
            for policy in result["matched"]
        )
        missing = "".join(f"<member>{xml_text(key)}</member>" for key in result["missing"])
        members.append(
            "<member>"
            f"<EvalActionName>{xml_text(result['action'])}</EvalActionName>"
            f"<EvalResourceName>{xml_text(result['resource'])}</EvalResourceName>"
            f"<EvalDecision>{result['decision']}</EvalDecision>"
            f"<MatchedStatements>{matched}</MatchedStatements>"
            f"<MissingContextValues>{missing}</MissingContextValues>"
            "<EvalDecisionDetails/>"
            "</member>"
        )
    return (
        f'<SimulatePrincipalPolicyResponse xmlns="{IAM_XML_NAMESPACE}">'
        "<SimulatePrincipalPolicyResult>"
        f"<EvaluationResults>{''.join(members)}</EvaluationResults>"
        "<IsTruncated>false</IsTruncated>"
        "</SimulatePrincipalPolicyResult>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        "</SimulatePrincipalPolicyResponse>"
    )


def iam_error_xml(error: IamError, request_id: str) -> str:
    fault = "Receiver" if error.status >= 500 else "Sender"
    return (
        f'<ErrorResponse xmlns="{IAM_XML_NAMESPACE}"><Error><Type>{fault}</Type><Code>{xml_text(error.code)}</Code>'
        f"<Message>{xml_text(error.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )


def form_members(form: dict[str, list[str]], name: str) -> list[str]:
    """`Name.member.1`, `Name.member.2`, ... of a query-protocol request, in order."""
    numbered = []
    for key, values in form.items():
        found = re.fullmatch(re.escape(name) + r"\.member\.(\d+)", key)
        if found is not None and values:
            numbered.append((int(found[1]), values[-1]))
    return [value for _, value in sorted(numbered)]


def context_entries(form: dict[str, list[str]]) -> dict[str, list[str]]:
    """`ContextEntries.member.N.ContextKeyName` and `.ContextKeyValues.member.M`, by the
    key's lower-cased name (condition keys are case-insensitive)."""
    context: dict[str, list[str]] = {}
    numbers = sorted(
        {int(found[1]) for key in form if (found := re.fullmatch(r"ContextEntries\.member\.(\d+)\..*", key))}
    )
    for number in numbers:
        prefix = f"ContextEntries.member.{number}"
        name = form.get(f"{prefix}.ContextKeyName", [""])[-1]
        if name:
            context.setdefault(name.lower(), []).extend(form_members(form, f"{prefix}.ContextKeyValues"))
    return context


class IamPolicySimulation:
    """WSGI middleware: IAM's SimulatePrincipalPolicy, which moto 5.2.5 lacks, answered
    from moto's IAM state (see the module docstring). Recorded as moto records its own."""

    def __init__(self, next_app: Callable[..., Iterable[bytes]]) -> None:
        self.next_app = next_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or request_service(environ) != "iam"
            or not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded")
        ):
            return self.next_app(environ, start_response)
        body = read_bodiless_safe(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if form.get("Action", [""])[-1] != "SimulatePrincipalPolicy":
            return self.next_app(environ, start_response)
        record_request(environ, body)
        request_id = str(moto_random().uuid4())
        try:
            source = form.get("PolicySourceArn", [""])[-1]
            if not source:
                raise IamError(400, "ValidationError", "PolicySourceArn is required.")
            actions = form_members(form, "ActionNames")
            if not actions:
                raise IamError(400, "ValidationError", "ActionNames must name at least one action.")
            resources = form_members(form, "ResourceArns") or ["*"]
            context = context_entries(form)
            policies = principal_policies(source)
            results = [
                simulate(policies, action, resource, context) for action in actions for resource in resources
            ]
            status, payload = 200, simulation_xml(results, request_id)
        except IamError as error:
            status, payload = error.status, iam_error_xml(error, request_id)
        encoded = payload.encode()
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "text/xml"), ("Content-Length", str(len(encoded))), ("x-amzn-RequestId", request_id)],
        )
        return [encoded]


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------


# One dashboards table per (account, partition), shared by that account's CloudWatch
# backends in every region of the partition. Guarded by its own lock: backends are created
# lazily, from whichever request thread first needs one.
SHARED_DASHBOARDS: dict[tuple[str, str], dict[str, Any]] = {}
SHARED_DASHBOARDS_LOCK = threading.Lock()


def share_dashboards_across_regions() -> None:
    """Make every region's CloudWatch backend of an account use one dashboards table."""
    from moto.cloudwatch.models import CloudWatchBackend
    from moto.utilities.utils import get_partition

    original_init = CloudWatchBackend.__init__

    def init(self: Any, region_name: str, account_id: str) -> None:
        original_init(self, region_name, account_id)
        with SHARED_DASHBOARDS_LOCK:
            self.dashboards = SHARED_DASHBOARDS.setdefault((account_id, get_partition(region_name)), {})

    CloudWatchBackend.__init__ = init



# ---------------------------------------------------------------------------
# ECR in front of a real OCI registry
# ---------------------------------------------------------------------------

ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
ECR_JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
CONTROL_ECR_REGISTRY = re.compile(r"^/sandbox-api/ecr/registry/?$")
# What DescribeImages asks the registry for: both the OCI and the Docker media types.
REGISTRY_MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
# How long the authorization token says it is valid, as ECR's (12 hours).
ECR_TOKEN_LIFETIME_SECONDS = 12 * 3600


class EcrRegistryBridge:
    """WSGI middleware: ECR's registry side, served by a real OCI registry.

    moto's ECR keeps repositories but has no registry: its GetAuthorizationToken names
    `https://ACCOUNT.dkr.ecr.REGION.amazonaws.com`, and it only knows images given to
    PutImage. Once a test registers a local registry (`POST /sandbox-api/ecr/registry` with
    `{"endpoint": "http://127.0.0.1:PORT"}`), this layer makes ECR point at it, as ECR
    points at its own registry: GetAuthorizationToken returns that endpoint and a token
    (`AWS:` and a password, base64, as ECR's), repository URIs name its host, and
    DescribeImages lists what was pushed there over the OCI distribution API (tags grouped
    by digest), for repositories that exist in moto. Without a registered registry
    everything is moto's own. The control request is not recorded.
    """

    def __init__(self, next_app: Callable[..., Iterable[bytes]]) -> None:
        self.next_app = next_app
        self.lock = threading.Lock()
        self.endpoint: str | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if CONTROL_ECR_REGISTRY.match(path):
            return self.register(environ, start_response)
        if path == MOTO_RESET_PATH and environ.get("REQUEST_METHOD") == "POST":
            # The registry belongs to the sandbox, not to moto's state: it stays.
            return self.next_app(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        with self.lock:
            endpoint = self.endpoint
        if endpoint is None or not target.startswith(ECR_TARGET_PREFIX):
            return self.next_app(environ, start_response)
        operation = target[len(ECR_TARGET_PREFIX):]
        body = read_bodiless_safe(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        if operation == "GetAuthorizationToken":
            record_request(environ, body)
            return self.authorization_token(endpoint, start_response)
        if operation == "DescribeImages":
            return self.describe_images(endpoint, environ, body, start_response)
        if operation in ("CreateRepository", "DescribeRepositories"):
            return self.with_registry_uris(endpoint, environ, start_response)
        return self.next_app(environ, start_response)

    def register(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return send_json(start_response, 405, {"message": "/sandbox-api/ecr/registry accepts POST only"}, [])
        try:
            document = json.loads(read_bodiless_safe(environ) or b"{}")
        except ValueError as error:
            return send_json(start_response, 400, {"message": f"the body is not JSON: {error}"}, [])
        endpoint = document.get("endpoint") if isinstance(document, dict) else None
        if endpoint is not None and not (isinstance(endpoint, str) and endpoint.startswith("http://127.")):
            return send_json(
                start_response, 400, {"message": "`endpoint` must be http://127.x.y.z:PORT, or null to unregister"}, []
            )
        with self.lock:
            self.endpoint = endpoint.rstrip("/") if endpoint else None
        return send_json(start_response, 200, {"endpoint": endpoint}, [])

    def authorization_token(self, endpoint: str, start_response: Callable[..., Any]) -> Iterable[bytes]:
        password = "sandbox-" + str(moto_random().uuid4())
        token = base64.b64encode(f"AWS:{password}".encode()).decode()
        document = {
            "authorizationData": [
                {
                    "authorizationToken": token,
                    "expiresAt": time.time() + ECR_TOKEN_LIFETIME_SECONDS,
                    "proxyEndpoint": endpoint,
                }
            ]
        }
        return send_ecr_json(start_response, 200, document)

    def with_registry_uris(
        self, endpoint: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """moto's answer with every repository URI naming the registry's host."""
        captured, body = run_captured(self.next_app, environ)
        if captured.status_code >= 400:
            start_response(captured.status, captured.headers)
            return [body]
        document = json.loads(body)
        host = registry_host(endpoint)
        repositories = document.get("repositories") or []
        if "repository" in document:
            repositories = [document["repository"]]
        for repository in repositories:
            repository["repositoryUri"] = f"{host}/{repository['repositoryName']}"
        return send_ecr_json(start_response, captured.status_code, document)

    def describe_images(
        self, endpoint: str, environ: dict[str, Any], body: bytes, start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = json.loads(body or b"{}")
        name = request.get("repositoryName", "")
        # The repository must exist in moto; its own answer (with the not-found error) is
        # what ECR would say.
        probe = dict(environ)
        probe_body = json.dumps({"repositoryNames": [name]}).encode()
        probe.update(
            {
                "HTTP_X_AMZ_TARGET": ECR_TARGET_PREFIX + "DescribeRepositories",
                "CONTENT_LENGTH": str(len(probe_body)),
                "wsgi.input": io.BytesIO(probe_body),
            }
        )
        captured, answer = run_captured(self.next_app, probe)
        if captured.status_code >= 400:
            start_response(captured.status, captured.headers)
            return [answer]
        repository = json.loads(answer)["repositories"][0]
        environ["wsgi.input"] = io.BytesIO(body)
        record_request(environ, body)
        try:
            details = registry_images(endpoint, repository["registryId"], name)
        except OSError as error:
            return send_ecr_json(
                start_response, 500, {"__type": "ServerException", "message": f"the sandbox registry failed: {error}"}
            )
        wanted = request.get("imageIds")
        if wanted:
            chosen = []
            for image_id in wanted:
                match = [
                    detail
                    for detail in details
                    if detail["imageDigest"] == image_id.get("imageDigest")
                    or image_id.get("imageTag") in detail.get("imageTags", [])
                ]
                if not match:
                    return send_ecr_json(
                        start_response,
                        400,
                        {
                            "__type": "ImageNotFoundException",
                            "message": f"The image with imageId {json.dumps(image_id)} does not exist within the "
                            f"repository with name '{name}' in the registry with id '{repository['registryId']}'",
                        },
                    )
                chosen.extend(detail for detail in match if detail not in chosen)
            details = chosen
        return send_ecr_json(start_response, 200, {"imageDetails": details})


def registry_host(endpoint: str) -> str:
    return endpoint.split("://", 1)[-1]


def registry_images(endpoint: str, registry_id: str, name: str) -> list[dict[str, Any]]:
    """The images of repository `name` in the registry, as ECR's imageDetails: one per
    manifest digest with its tags, media type and the size of its layers."""
    quoted = urllib.parse.quote(name, safe="/")
    try:
        tags = registry_json(f"{endpoint}/v2/{quoted}/tags/list")[0].get("tags") or []
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return []
        raise
    by_digest: dict[str, dict[str, Any]] = {}
    for tag in sorted(tags):
        manifest, digest, media_type = registry_json(f"{endpoint}/v2/{quoted}/manifests/{tag}")
        detail = by_digest.setdefault(
            digest,
            {
                "registryId": registry_id,
                "repositoryName": name,
                "imageDigest": digest,
                "imageTags": [],
                "imageSizeInBytes": image_size(endpoint, quoted, manifest),
                "imagePushedAt": time.time(),
                "imageManifestMediaType": media_type,
            },
        )
        detail["imageTags"].append(tag)
    return list(by_digest.values())


def image_size(endpoint: str, quoted: str, manifest: dict[str, Any]) -> int:
    """The compressed size of the layers, of the first platform's image for an index."""
    if "manifests" in manifest and manifest["manifests"]:
        first = manifest["manifests"][0]["digest"]
        manifest = registry_json(f"{endpoint}/v2/{quoted}/manifests/{first}")[0]
    return sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))


def registry_json(url: str) -> tuple[dict[str, Any], str, str]:
    """GET a registry document: (document, Docker-Content-Digest, Content-Type)."""
    request = urllib.request.Request(url, headers={"Accept": REGISTRY_MANIFEST_ACCEPT})
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = response.read()
        digest = response.headers.get("Docker-Content-Digest", "")
        media_type = response.headers.get("Content-Type", "")
    return json.loads(payload), digest, media_type


def send_ecr_json(start_response: Callable[..., Any], status_code: int, document: Any) -> Iterable[bytes]:
    payload = json.dumps(document).encode()
    try:
        reason = HTTPStatus(status_code).phrase
    except ValueError:
        reason = "Error"
    headers = [
        ("Content-Type", ECR_JSON_CONTENT_TYPE),
        ("Content-Length", str(len(payload))),
        ("x-amzn-RequestId", str(moto_random().uuid4())),
    ]
    start_response(f"{status_code} {reason}", headers)
    return [payload]


def forget_shared_dashboards() -> None:
    """On moto's reset: the new backends start with empty tables, as moto's own would."""
    with SHARED_DASHBOARDS_LOCK:
        SHARED_DASHBOARDS.clear()


def build_application() -> "EcrRegistryBridge":
    # moto reads its environment variables (MOTO_ENABLE_RECORDING, MOTO_ACCOUNT_ID, ...)
    # when it is imported, so it is imported only here, after the process started.
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    share_dashboards_across_regions()
    fix_cloudwatch_alarms()
    return EcrRegistryBridge(
        IamPolicySimulation(EksEmulation(CborTranslator(DomainDispatcherApplication(create_backend_app))))
    )


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

    class NoDelayRequestHandler(MotoRequestHandler):
        """Sets TCP_NODELAY on each connection, as AWS's endpoints and Go servers do: werkzeug
        writes the headers and the body of a response separately, and on a kept-alive
        connection the second write would wait for the client's delayed ACK (~40 ms)."""

        def setup(self) -> None:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().setup()

    application = build_application()
    server = make_server(args.host, args.port, application, threaded=True, request_handler=NoDelayRequestHandler)
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
