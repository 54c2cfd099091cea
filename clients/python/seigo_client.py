"""seigo_client: the Python client of seigod, seigo's HTTP service (doc/seigod.md).

Standard library only (http.client, json, uuid, threading). One ``Client`` per process is enough:
it is safe to share between threads and keeps one keep-alive connection per thread.

Declarative transactions — every step is known up front; they are sent as one request when the
``with`` block ends normally, and run atomically across the shards, Redis and the broker::

    from seigo_client import Client, GuardFailed

    client = Client("http://127.0.0.1:8640")
    try:
        with client.transaction() as tx:
            tx.sql("trade_take_item", key=seller, params=[seller, item], expect_rows=1,
                   reason="the seller has no such item")
            tx.sql("trade_credit_gold", key=seller, params=[price, seller], expect_rows=1)
            tx.sql("trade_debit_gold", key=buyer, params=[price, buyer, price], expect_rows=1,
                   reason="not enough gold")
            tx.sql("trade_give_item", key=buyer, params=[buyer, item])
            tx.sql("player_gold", key=buyer, params=[buyer], returning=True, name="buyer")
        print(tx.result.gid, tx.result["buyer"].scalar())
    except GuardFailed as e:
        print("refused:", e.message, "at step", e.step)

The idempotency key is the client's business: each logical transaction gets one ``uuid4``; if
the reply is lost (a dropped connection, a timeout), or seigod answers 504 ``outcome_unknown`` or
503 (``gave_up``, ``deadline_exceeded``: nothing committed), the *same* request with the *same*
key is sent again (503: after Retry-After, with backoff), up to ``retries`` times. seigod runs it
at most once and replays the first answer to a resend, so the caller sees one outcome.

Interactive transactions — for logic that reads before it decides::

    @client.transactional(retries=5)
    def buy(tx, player, item, price):
        gold = int(tx.sql("player_gold", key=player, params=[player], returning=True).scalar())
        if gold < price:
            raise NotEnoughGold()          # raising aborts; nothing is written
        tx.sql("trade_debit_gold", key=player, params=[price, player, price], expect_rows=1)
        tx.sql("trade_give_item", key=player, params=[player, item])
        return gold - price                # returning commits

    buy(42, 7, 100)

A deadlock or lock-wait timeout ends the session with 409 ``conflict``; the decorator then runs
the whole function again (bounded, with backoff). ``client.session()`` is the same session as a
context manager, without the re-runs.

Errors are typed (``SeigoError`` and its subclasses below) and carry ``.code``, ``.status``,
``.step`` (the 0-based step to blame, or None) and ``.body`` (the parsed JSON answer).
"""

import base64
import http.client
import json
import random
import select
import threading
import time
import urllib.parse
import uuid

__all__ = [
    "Client", "Transaction", "Session", "Result", "StepResult",
    "SeigoError", "BadRequest", "BodyTooLarge", "NotFound", "MethodNotAllowed", "Unauthorized",
    "Forbidden", "Aborted", "GuardFailed", "QueryFailed", "Conflict", "IdempotencyKeyMismatch",
    "GaveUp", "DeadlineExceeded", "OutcomeUnknown", "Unavailable",
]

INT64_MAX = 2 ** 63 - 1

# A kept-alive connection idle this long is not reused: seigod closes idle ones after 5 s, and a
# request racing that close could not be told apart from one seigod received.
_KEEPALIVE_IDLE_S = 4.0


# ---- Errors ------------------------------------------------------------------------------

class SeigoError(Exception):
    """Base of every error of this module.

    Attributes: ``code`` (seigod's error code, e.g. ``"guard_failed"``), ``status`` (the HTTP
    status, None if no answer arrived), ``message`` (seigod's explanation), ``step`` (the 0-based
    index, in request order, of the step to blame, or None), ``body`` (the parsed JSON answer, or
    None), and for transaction outcomes ``outcome``, ``gid``, ``attempts``, ``replayed``.
    """

    def __init__(self, message, code=None, status=None, step=None, body=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.step = step
        self.body = body
        b = body if isinstance(body, dict) else {}
        self.outcome = b.get("outcome")
        self.gid = b.get("gid")
        self.attempts = b.get("attempts")
        self.replayed = bool(b.get("replayed", False))
        self.idempotency_key = None

    def __str__(self):
        parts = [self.message]
        if self.code:
            parts.append("[%s%s]" % (self.code, "" if self.status is None else " %d" % self.status))
        if self.step is not None:
            parts.append("(step %d)" % self.step)
        return " ".join(parts)


class BadRequest(SeigoError):
    """400: the request was refused before anything ran (malformed, unknown field or statement,
    wrong type, too many steps, raw SQL not enabled ...; also 415 unsupported_media_type, a POST
    that is not application/json). Nothing was written."""


class BodyTooLarge(BadRequest):
    """413: the request is larger than seigod's server.max_body_bytes."""


class MethodNotAllowed(BadRequest):
    """405: the path exists, but not with this method."""


class NotFound(SeigoError):
    """404: no such path, idempotency key, session or gid."""


class Unauthorized(SeigoError):
    """401: an admin endpoint was called without a token."""


class Forbidden(SeigoError):
    """403: the admin token is wrong."""


class Aborted(SeigoError):
    """422: the transaction was aborted; nothing of it committed."""


class GuardFailed(Aborted):
    """422 guard_failed: an ``expect_rows``/``expect`` guard or a bounded Redis ``incr`` did not
    hold; ``message`` carries the step's ``reason``."""


class QueryFailed(Aborted):
    """422 query_failed: the database rejected a statement; ``server_errno`` is its error
    number (e.g. 1146: no such table)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        b = self.body if isinstance(self.body, dict) else {}
        e = b.get("error") if isinstance(b.get("error"), dict) else {}
        self.server_errno = e.get("server_errno", b.get("server_errno"))


class Conflict(SeigoError):
    """409 conflict: an interactive session was rolled back by a deadlock or a lock-wait
    timeout. Run the whole function again (``Client.transactional`` does)."""


class IdempotencyKeyMismatch(SeigoError):
    """409 idempotency_key_mismatch: the key was used before with a different request; nothing
    was run. Never retried."""


class GaveUp(SeigoError):
    """503 gave_up: every attempt hit a conflict or an unavailable store; nothing committed."""


class DeadlineExceeded(GaveUp):
    """503 deadline_exceeded: the deadline passed; nothing committed."""


class OutcomeUnknown(SeigoError):
    """504 outcome_unknown, still so after every resend ran out — or the reply to a request that
    reached seigod was lost every time, or seigod still answered 503 ``key_in_flight`` (the first
    request with the key is running or in doubt) when the resends ran out. The transaction may
    or may not have committed: look it up later with ``Client.lookup(e.idempotency_key)``, or
    send it again with the same key. For an interactive session (no key): the reply to its
    commit was lost; only the data can tell."""


class Unavailable(SeigoError):
    """seigod cannot be reached (connection refused, reset, timed out before anything was
    sent), or answered 503 for a reason other than a transaction's outcome (stopping, too many
    sessions, a store down)."""


_BY_CODE = {
    "bad_request": BadRequest, "body_too_large": BodyTooLarge,
    "method_not_allowed": MethodNotAllowed, "not_found": NotFound,
    "unauthorized": Unauthorized, "forbidden": Forbidden,
    "guard_failed": GuardFailed, "query_failed": QueryFailed, "aborted": Aborted,
    "conflict": Conflict, "idempotency_key_mismatch": IdempotencyKeyMismatch,
    "gave_up": GaveUp, "deadline_exceeded": DeadlineExceeded,
    "outcome_unknown": OutcomeUnknown, "unsupported_media_type": BadRequest,
    "key_in_flight": OutcomeUnknown,
}
_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
              405: MethodNotAllowed, 413: BodyTooLarge, 415: BadRequest, 422: Aborted,
              503: Unavailable, 504: OutcomeUnknown}

# 503 key_in_flight: a request with this idempotency key is still running or in doubt in seigod;
# it may yet commit. Resent like any 503, but never reported as GaveUp.
KEY_IN_FLIGHT = "key_in_flight"


def _error_from(status, body):
    """The typed error for an HTTP error answer."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {}
    code = err.get("code")
    message = err.get("message") or ("HTTP %d" % status)
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or SeigoError
    return cls(message, code=code, status=status, step=err.get("step"), body=body)


# ---- Results -----------------------------------------------------------------------------

def _cell(c):
    """A cell as seigod sends it: text, None, or {"base64": ...} for bytes that are not UTF-8."""
    if isinstance(c, dict) and set(c) == {"base64"}:
        return base64.b64decode(c["base64"])
    return c


class StepResult:
    """One step's result (doc/seigod.md, "Response").

    ``name`` (the step's label or None), ``affected_rows``, ``last_insert_id``, ``columns``,
    ``rows`` (lists of text cells, None for NULL, ``bytes`` for a cell that is not UTF-8 — seigod
    sends those as ``{"base64": ...}``; only for ``returning=True`` steps), ``value``
    (a Redis read's value, str or bytes likewise), ``members`` (Redis ``ztop``: [(member, score)]), ``message_id`` (a
    publish), ``raw`` (the JSON object as received).
    """

    def __init__(self, raw):
        self.raw = raw or {}
        self.name = self.raw.get("name")
        self.affected_rows = self.raw.get("affected_rows")
        self.last_insert_id = self.raw.get("last_insert_id")
        self.columns = self.raw.get("columns")
        rows = self.raw.get("rows")
        self.rows = None if rows is None else [[_cell(c) for c in r] for r in rows]
        self.value = _cell(self.raw.get("value"))
        m = self.raw.get("members")
        self.members = None if m is None else [(_cell(x["member"]), x["score"]) for x in m]
        self.message_id = self.raw.get("message_id")

    @property
    def row(self):
        """The first row, or None."""
        return self.rows[0] if self.rows else None

    def scalar(self, default=None):
        """The first row's first cell (text), or ``default`` if there is none."""
        return self.rows[0][0] if self.rows and self.rows[0] else default

    def dicts(self):
        """The rows as dicts column -> cell."""
        return [dict(zip(self.columns or [], r)) for r in (self.rows or [])]

    def __repr__(self):
        return "StepResult(%r)" % (self.raw,)


class Result:
    """A transaction's outcome: ``outcome`` ("committed"), ``gid``, ``attempts`` (seigod's runs
    of it), ``replayed`` (True: the answer is the first run's, replayed for a resent key),
    ``results`` (StepResult per step, in request order), ``pending_visibility``,
    ``idempotency_key`` (the key it was sent with) and ``raw`` (the JSON as received).

    ``result[i]`` is step i's result, ``result["name"]`` the step labelled ``name``.
    """

    def __init__(self, raw, idempotency_key=None):
        self.raw = raw or {}
        self.outcome = self.raw.get("outcome")
        self.gid = self.raw.get("gid")
        self.attempts = self.raw.get("attempts")
        self.replayed = bool(self.raw.get("replayed", False))
        self.results = [StepResult(r) for r in self.raw.get("results", [])]
        self.pending_visibility = self.raw.get("pending_visibility", [])
        self.idempotency_key = idempotency_key
        # Only for a Client.lookup() record:
        self.state = self.raw.get("state")
        self.http_status = self.raw.get("http_status")
        self.error = self.raw.get("error")

    @property
    def committed(self):
        return self.outcome == "committed"

    def step(self, name):
        """The result of the step labelled ``name`` (KeyError if none)."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def __getitem__(self, i):
        if isinstance(i, str):
            return self.step(i)
        return self.results[i]

    def __iter__(self):
        return iter(self.results)

    def __len__(self):
        return len(self.results)

    def __repr__(self):
        return "Result(outcome=%r, gid=%r, attempts=%r, replayed=%r, results=%r)" % (
            self.outcome, self.gid, self.attempts, self.replayed, self.results)


# ---- Steps -------------------------------------------------------------------------------

def _body_text(body):
    if isinstance(body, str):
        return body
    if isinstance(body, (bytes, bytearray)):
        return bytes(body).decode("utf-8")
    return json.dumps(body, separators=(",", ":"))


class _StepBuilder:
    """The step methods shared by declarative transactions and interactive sessions. Each one
    calls ``self._add(step)`` with the step's JSON object."""

    def _add(self, step):  # pragma: no cover - overridden
        raise NotImplementedError

    def sql(self, statement, key=None, params=(), expect_rows=None, expect=None, reason=None,
            returning=False, name=None, shard=None):
        """A catalog statement (seigod's [statements]) on the shard of ``key`` (an int or a str;
        or an explicit ``shard`` index). ``params`` fill the statement's ``?`` (None, bool, int,
        float, str). Guards: ``expect_rows`` (the exact number of affected rows) and/or ``expect``
        (a dict column -> value the first row must hold, compared as text); ``reason`` is the
        message when a guard fails. ``returning=True`` puts the rows into the step's result."""
        step = {"sql": statement}
        return self._add(self._sql_fields(step, key, params, expect_rows, expect, reason,
                                          returning, name, shard))

    def raw_sql(self, sql, key=None, params=(), expect_rows=None, expect=None, reason=None,
                returning=False, name=None, shard=None):
        """Like ``sql`` with SQL text instead of a catalog name (only when seigod allows it:
        server.allow_raw_sql)."""
        step = {"raw_sql": sql}
        return self._add(self._sql_fields(step, key, params, expect_rows, expect, reason,
                                          returning, name, shard))

    @staticmethod
    def _sql_fields(step, key, params, expect_rows, expect, reason, returning, name, shard):
        if shard is not None:
            step["shard"] = shard
        else:
            step["key"] = key
        step["params"] = list(params)
        if expect_rows is not None:
            step["expect_rows"] = expect_rows
        if expect is not None:
            step["expect"] = dict(expect)
        if reason is not None:
            step["reason"] = reason
        if returning:
            step["return"] = True
        if name is not None:
            step["name"] = name
        return step

    def _redis(self, op, key, name, **fields):
        step = {"redis": op, "key": key}
        step.update({k: v for k, v in fields.items() if v is not None})
        if name is not None:
            step["name"] = name
        return self._add(step)

    def redis_get(self, key, name=None):
        """GET ``key``: the result's ``value`` (None if absent)."""
        return self._redis("get", key, name)

    def redis_set(self, key, value, name=None):
        """SET ``key`` ``value`` (a string)."""
        return self._redis("set", key, name, value=str(value))

    def redis_del(self, key, name=None):
        """DEL ``key``."""
        return self._redis("del", key, name)

    def redis_hget(self, key, field, name=None):
        """HGET: the result's ``value``."""
        return self._redis("hget", key, name, field=field)

    def redis_hset(self, key, field, value, name=None):
        """HSET ``key`` ``field`` ``value``."""
        return self._redis("hset", key, name, field=field, value=str(value))

    def redis_hdel(self, key, field, name=None):
        """HDEL ``key`` ``field``."""
        return self._redis("hdel", key, name, field=field)

    def redis_zscore(self, key, member, name=None):
        """ZSCORE: the result's ``value`` (text, None if absent)."""
        return self._redis("zscore", key, name, member=member)

    def redis_zadd(self, key, member, score, name=None):
        """ZADD ``key`` ``score`` ``member``."""
        return self._redis("zadd", key, name, member=member, score=score)

    def redis_zrem(self, key, member, name=None):
        """ZREM ``key`` ``member``."""
        return self._redis("zrem", key, name, member=member)

    def redis_ztop(self, key, count, name=None):
        """The ``count`` highest members: the result's ``members``, [(member, score)]."""
        return self._redis("ztop", key, name, count=count)

    def redis_incr(self, key, delta, min=0, max=INT64_MAX, reason=None, name=None):
        """Bounded increment: adds ``delta`` unless the result would leave [min, max]; then the
        whole transaction is refused with GuardFailed(``reason``)."""
        return self._redis("incr", key, name, delta=delta, min=min, max=max, reason=reason)

    def publish(self, exchange, routing_key, body, headers=None, content_type=None, type=None,
                name=None):
        """A message to RabbitMQ, published if and only if the transaction commits (the
        outbox). ``body``: str, bytes (UTF-8) or anything JSON-serialisable; ``headers``: a dict
        of strings. The result's ``message_id`` identifies it."""
        p = {"exchange": exchange, "routing_key": routing_key, "body": _body_text(body)}
        if content_type is None and not isinstance(body, (str, bytes, bytearray)):
            content_type = "application/json"
        if content_type is not None:
            p["content_type"] = content_type
        if type is not None:
            p["type"] = type
        if headers:
            p["headers"] = {str(k): str(v) for k, v in headers.items()}
        step = {"publish": p}
        if name is not None:
            step["name"] = name
        return self._add(step)


class Transaction(_StepBuilder):
    """A declarative transaction being written (``Client.transaction()``).

    The step methods (``sql``, ``raw_sql``, ``redis_*``, ``publish``) only collect; each returns
    the step's index, usable as ``tx.result[index]``. When the ``with`` block ends normally the
    steps are sent as one request and ``tx.result`` holds the ``Result``; an error is raised
    from the ``with`` statement. An exception inside the block sends nothing. A block that added
    no step (or called ``cancel()``) sends nothing and leaves ``tx.result`` None.
    """

    def __init__(self, client, timeout_ms=None, read_only=False, idempotency_key=None,
                 retries=None):
        self.client = client
        self.timeout_ms = timeout_ms
        self.read_only = read_only
        self.idempotency_key = idempotency_key
        self.retries = retries
        self.steps = []
        self.result = None
        self._cancelled = False

    def _add(self, step):
        self.steps.append(step)
        return len(self.steps) - 1

    def cancel(self):
        """Send nothing when the block ends."""
        self._cancelled = True

    def commit(self):
        """Sends the steps now (what the end of the ``with`` block does); returns the Result."""
        if self.result is None and self.steps and not self._cancelled:
            self.result = self.client.transact(
                self.steps, idempotency_key=self.idempotency_key, timeout_ms=self.timeout_ms,
                read_only=self.read_only, retries=self.retries)
            self.idempotency_key = self.result.idempotency_key
        return self.result

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        return False


class Session(_StepBuilder):
    """An interactive transaction (``Client.session()``; POST /v1/sessions).

    The step methods run at once and return that step's ``StepResult``; ``steps(list)`` runs
    several in one request and returns their results. ``commit()`` returns the ``Result``;
    ``abort()`` rolls back. As a context manager: a normal exit commits (unless already ended),
    an exception aborts. Any error answer ends the session (seigod rolls it back): 409 raises
    ``Conflict`` — run the whole function again (``Client.transactional``). ``commit()`` after
    the session ended without committing raises: the error that ended it (also when the caller
    caught that error and went on), or ``Aborted`` after ``abort()``.

    A session has no idempotency key, so no request of it that may have reached seigod is ever
    sent again (only one whose connection was refused): if the reply to ``commit()`` is lost,
    ``OutcomeUnknown`` is raised and only the data can tell; a lost reply to a step ends the
    session (rolled back) with ``Unavailable``.
    """

    def __init__(self, client, timeout_ms=None, read_only=False):
        self.client = client
        self.timeout_ms = timeout_ms
        self.read_only = read_only
        self.id = None
        self.ended = False
        self.result = None
        self.error = None  # the error that ended the session without a commit, if any

    def _end(self, err):
        self.ended = True
        if self.error is None and self.result is None:
            self.error = err
        return err

    def _send(self, path, body, timeout=None):
        """POSTs once; resends only while the connection is refused (the request certainly
        never left). Returns (status, reply, resent); raises _Lost or _NotSent."""
        c = self.client
        resent = False
        for attempt in range(c.retries + 1):
            try:
                status, _, reply = c._call("POST", path, body, timeout=timeout,
                                           retry_stale=False)
                return status, reply, resent
            except _NotSent:
                if attempt == c.retries:
                    raise
            c._sleep(attempt, None)
            resent = True
        raise AssertionError("unreachable")

    def begin(self):
        """Opens the session (done by ``__enter__`` and by the first step)."""
        if self.id is not None:
            return self
        if self.ended:
            raise self.error or SeigoError("the session has ended", code="session_ended")
        body = {}
        if self.timeout_ms is not None:
            body["timeout_ms"] = int(self.timeout_ms)
        if self.read_only:
            body["read_only"] = True
        c = self.client
        for attempt in range(c.retries + 1):
            try:
                status, reply, _ = self._send("/v1/sessions", body)
            except _NotSent as e:
                raise self._end(Unavailable("cannot reach seigod at %s: %s" % (c.url, e.cause),
                                            code="unavailable")) from e.cause
            except _Lost as e:
                # Not sent again: seigod may have opened it (it aborts it after session_idle_ms).
                raise self._end(Unavailable(
                    "the reply to opening a session was lost (%s); not sent again" % e.cause,
                    code="unavailable")) from e.cause
            if status == 503 and attempt < c.retries:
                c._sleep(attempt, None)  # an answer: no session was opened
                continue
            if status >= 300:
                raise self._end(_error_from(status, reply))
            self.id = reply["session"]
            return self
        raise AssertionError("unreachable")

    def _post(self, what, body):
        path = "/v1/sessions/%s/%s" % (urllib.parse.quote(self.id, safe=""), what)
        timeout = self.client._timeout_for(self.timeout_ms)
        is_commit = what == "commit"
        try:
            status, reply, resent = self._send(path, body, timeout=timeout)
        except _Lost as e:
            if is_commit:
                self.ended = True
                err = OutcomeUnknown("the reply to a session's commit was lost: " + str(e.cause),
                                     code="outcome_unknown")
                self.error = err
                raise err from e.cause
            self.ended = True
            self.client._abort_quietly(self.id)
            raise self._end(Unavailable(
                "the reply from seigod was lost (%s); the session was rolled back" % e.cause,
                code="unavailable")) from e.cause
        except _NotSent as e:
            raise self._end(Unavailable("cannot reach seigod: %s" % e.cause,
                                        code="unavailable")) from e.cause
        if status >= 300:
            err = _error_from(status, reply)
            if is_commit and resent and status == 404:
                # A resent commit that finds no session: an earlier send may have committed it.
                err = OutcomeUnknown("the commit was sent again and seigod no longer knows the "
                                     "session: it may have committed", code="outcome_unknown",
                                     status=status, body=reply)
            raise self._end(err)
        return reply

    def _add(self, step):
        return self.steps([step])[0]

    def steps(self, steps):
        """Runs ``steps`` (JSON step objects, in this order) now; returns their StepResults."""
        if self.ended:
            raise SeigoError("the session has ended", code="session_ended")
        self.begin()
        reply = self._post("steps", {"steps": list(steps)})
        return [StepResult(r) for r in reply.get("results", [])]

    def commit(self):
        """Commits; returns the Result. If the session already ended without committing, raises
        the error that ended it (``Aborted`` after ``abort()``); nothing was written then."""
        if self.ended:
            if self.result is not None:
                return self.result
            raise self.error or Aborted("the session was aborted; nothing was committed",
                                        code="aborted")
        self.begin()
        reply = self._post("commit", {})
        self.ended = True
        self.result = Result(reply)
        return self.result

    def abort(self):
        """Rolls back (nothing of the session is written). Quiet if it already ended."""
        if self.ended or self.id is None:
            self.ended = True
            return
        self.ended = True
        if self.error is None and self.result is None:
            self.error = Aborted("the session was aborted; nothing was committed",
                                 code="aborted")
        try:
            self._post("abort", {})
        except (NotFound, Unavailable):
            pass  # ended meanwhile (idle, deadline) or seigod gone: nothing commits either way

    def __enter__(self):
        return self.begin()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


# ---- The client --------------------------------------------------------------------------

class _NotSent(Exception):
    """Internal: the request did not reach seigod (safe to send again)."""

    def __init__(self, cause):
        super().__init__(str(cause))
        self.cause = cause


class _Lost(Exception):
    """Internal: the request may have reached seigod, the reply did not arrive."""

    def __init__(self, cause):
        super().__init__(str(cause))
        self.cause = cause


class Client:
    """A connection to one seigod (or a load balancer in front of several).

    ``url``: ``http://host:port``. ``timeout``: seconds to wait for an answer (a transaction
    with ``timeout_ms`` waits that long plus 5 s, whichever is more). ``retries``: how often a
    declarative transaction is sent again after a lost reply, a 504 or a 503 (with the same
    idempotency key). ``backoff``/``max_backoff``: the first and the longest pause between
    resends (exponential, with jitter; at least Retry-After): the defaults ride out about 3-6 s
    of seigod being unreachable, a restart. ``admin_token``: the default token
    of ``resolve()``.
    """

    def __init__(self, url="http://127.0.0.1:8640", timeout=30.0, retries=6, backoff=0.1,
                 max_backoff=2.0, admin_token=None, headers=None):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("seigod url must be http://host:port, not %r" % (url,))
        self.url = url.rstrip("/")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.admin_token = admin_token
        self.headers = dict(headers or {})
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        self._conns = set()  # every thread's connection, for close_all()

    # -- connections --

    def _conn(self):
        c = getattr(self._local, "conn", None)
        if c is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            c = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = c
            self._local.used = False
            self._local.last_used = 0.0
            with self._conns_lock:
                self._conns.add(c)
        return c

    def close(self):
        """Closes this thread's connection (the next request opens a new one)."""
        c = getattr(self._local, "conn", None)
        self._local.conn = None
        if c is not None:
            with self._conns_lock:
                self._conns.discard(c)
            c.close()

    def close_all(self):
        """Closes every thread's connection; call it only when no thread uses the client."""
        with self._conns_lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            c.close()

    def __del__(self):
        try:
            self.close_all()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close_all()
        return False

    def _timeout_for(self, timeout_ms):
        if timeout_ms is None:
            return self.timeout
        return max(self.timeout, timeout_ms / 1000.0 + 5.0)

    def _call(self, method, path, body=None, headers=None, timeout=None, raw=None,
              retry_stale=True):
        """One HTTP exchange: (status, headers, parsed body). Raises _NotSent if the request
        certainly did not reach seigod, _Lost if it may have and no answer came.

        A kept-alive connection is checked before it is reused: one idle for
        _KEEPALIVE_IDLE_S or that seigod has closed (readable: EOF) is replaced by a new one
        before anything is sent. ``retry_stale``: a request that still failed on a reused
        connection as if seigod had closed it is sent once more on a new one — only for
        requests that are safe to repeat (reads, keyed transactions, abort); seigod may have
        received the first."""
        data = raw if raw is not None else (None if body is None else
                                            json.dumps(body, separators=(",", ":")))
        if isinstance(data, str):
            data = data.encode("utf-8")
        h = {"Accept": "application/json"}
        h.update(self.headers)
        h.update(headers or {})
        # seigod answers 415 to a POST that is not application/json: always sent, never
        # overridden by a caller's header (in any capitalisation).
        h = {k: v for k, v in h.items() if k.lower() != "content-type"}
        h["Content-Type"] = "application/json"
        for attempt in (0, 1):
            c = self._conn()
            if self._local.used and not self._reusable(c):
                self.close()
                c = self._conn()
            reused = self._local.used
            c.timeout = timeout or self.timeout
            sent = False
            try:
                if c.sock is not None:
                    c.sock.settimeout(c.timeout)
                if c.sock is None:
                    c.connect()
                sent = True  # from here on seigod may have the request
                c.request(method, self._prefix + path, body=data, headers=h)
                r = c.getresponse()
                payload = r.read()
                self._local.used = True
                self._local.last_used = time.monotonic()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                stale = reused and isinstance(e, (http.client.RemoteDisconnected,
                                                  ConnectionResetError, BrokenPipeError))
                if not sent:
                    raise _NotSent(e)
                if stale and retry_stale and attempt == 0:
                    continue  # seigod closed the idle connection before reading: send again
                raise _Lost(e)
            if r.getheader("Connection", "").lower() == "close":
                self.close()
            ctype = r.getheader("Content-Type", "")
            text = payload.decode("utf-8", "replace")
            parsed = text
            if ctype.startswith("application/json") and text:
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = {"error": {"code": "bad_reply", "message": text[:200]}}
            return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed
        raise AssertionError("unreachable")

    def _reusable(self, c):
        """Whether the kept-alive connection ``c`` may carry another request: not idle too
        long, and nothing readable on it (an idle HTTP connection has nothing to read: EOF or
        data means seigod closed it or is broken)."""
        if c.sock is None:
            return True  # nothing to reuse: _call connects
        if time.monotonic() - getattr(self._local, "last_used", 0.0) > _KEEPALIVE_IDLE_S:
            return False
        try:
            if hasattr(select, "poll"):
                p = select.poll()
                p.register(c.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
                return not p.poll(0)
            return not select.select([c.sock], [], [], 0)[0]
        except (OSError, ValueError):
            return False

    def _call_retrying(self, method, path, body=None, headers=None):
        """For requests that are safe to repeat (reads): connection failures, lost replies and
        503s are retried up to ``retries`` times. Never for a session's requests."""
        last = None
        for attempt in range(self.retries + 1):
            try:
                status, hdrs, reply = self._call(method, path, body, headers=headers)
            except (_NotSent, _Lost) as e:
                last = Unavailable("cannot reach seigod at %s: %s" % (self.url, e.cause),
                                   code="unavailable")
                last.__cause__ = e.cause
            else:
                if status != 503 or attempt == self.retries:
                    return status, hdrs, reply
                last = _error_from(status, reply)
                self._sleep(attempt, hdrs.get("retry-after"))
                continue
            if attempt < self.retries:
                self._sleep(attempt, None)
        raise last

    def _sleep(self, attempt, retry_after):
        pause = min(self.max_backoff, self.backoff * (2 ** attempt)) * random.uniform(0.5, 1.0)
        if retry_after:
            try:
                pause = max(pause, float(retry_after))
            except ValueError:
                pass
        time.sleep(pause)

    def _abort_quietly(self, session_id):
        try:
            self._call("POST", "/v1/sessions/%s/abort" % urllib.parse.quote(session_id, safe=""),
                       {})
        except (_NotSent, _Lost):
            pass

    def _get_json(self, path):
        status, _, reply = self._call_retrying("GET", path)
        if status >= 300:
            raise _error_from(status, reply)
        return reply

    # -- transactions --

    def transaction(self, timeout_ms=None, read_only=False, idempotency_key=None, retries=None):
        """A declarative transaction to fill in a ``with`` block (see ``Transaction``).
        ``timeout_ms``: seigod's deadline for the whole request (capped by its
        server.max_timeout_ms). ``read_only``: only reads (no idempotency key is needed then).
        ``idempotency_key``: your own key (default: a fresh uuid4)."""
        return Transaction(self, timeout_ms=timeout_ms, read_only=read_only,
                           idempotency_key=idempotency_key, retries=retries)

    def transact(self, steps, idempotency_key=None, timeout_ms=None, read_only=False,
                 retries=None):
        """Runs a prepared list of steps (JSON step objects as in doc/seigod.md) as one
        transaction; returns the ``Result`` or raises a ``SeigoError``.

        The request carries ``idempotency_key`` (default: a new uuid4; none for read-only).
        A lost reply, a 504 or a 503 sends the same request again, up to ``retries`` (default:
        the client's) times; when they run out: ``OutcomeUnknown`` (a reply was lost, a 504, or
        a 503 ``key_in_flight``: an earlier send may still commit; look the key up later),
        ``GaveUp``/``DeadlineExceeded`` (503: nothing committed) or ``Unavailable`` (seigod
        never got the request).
        """
        body = {"steps": list(steps)}
        key = None
        if not read_only:
            key = idempotency_key or "py-" + uuid.uuid4().hex
            body["idempotency_key"] = key
        if timeout_ms is not None:
            body["timeout_ms"] = int(timeout_ms)
        if read_only:
            body["read_only"] = True
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")  # the same bytes each time
        retries = self.retries if retries is None else retries
        http_timeout = self._timeout_for(timeout_ms)
        maybe_ran = False  # did a request reach seigod without its answer reaching us?
        last = None
        for attempt in range(retries + 1):
            retry_after = None
            try:
                # A lost reply, stale connection or not, is resent by this loop (same key) and
                # counted in maybe_ran.
                status, hdrs, reply = self._call("POST", "/v1/transactions", raw=data,
                                                 timeout=http_timeout, retry_stale=False)
            except _NotSent as e:
                last = Unavailable("cannot reach seigod at %s: %s" % (self.url, e.cause),
                                   code="unavailable")
            except _Lost as e:
                maybe_ran = True
                last = OutcomeUnknown("the reply was lost (%s)" % e.cause, code="outcome_unknown")
            else:
                if status == 200:
                    return Result(reply, idempotency_key=key)
                err = _error_from(status, reply)
                err.idempotency_key = key
                if status not in (503, 504):
                    raise err
                if status == 504 or err.code == KEY_IN_FLIGHT:
                    # 504: the commit's reply was lost inside seigod; key_in_flight: the first
                    # request with this key is still running or in doubt. Either may commit.
                    maybe_ran = True
                last = err
                retry_after = hdrs.get("retry-after")
            if attempt < retries:
                self._sleep(attempt, retry_after)
        last.idempotency_key = key
        if maybe_ran and not isinstance(last, OutcomeUnknown):
            # An earlier send may have committed; the last answer only speaks for the last one.
            e = OutcomeUnknown("a reply was lost and the resends did not settle it: %s"
                               % last.message, code="outcome_unknown", status=last.status,
                               body=last.body)
            e.idempotency_key = key
            raise e
        raise last

    def session(self, timeout_ms=None, read_only=False):
        """An interactive session (see ``Session``), opened by ``with`` or the first step."""
        return Session(self, timeout_ms=timeout_ms, read_only=read_only)

    def transactional(self, fn=None, retries=5, timeout_ms=None, read_only=False,
                      backoff=None):
        """Decorator: ``fn(tx, *args, **kwargs)`` runs inside an interactive session ``tx``;
        returning normally commits (the return value is passed on), raising aborts (the
        exception is passed on). A 409 ``Conflict`` (deadlock, lock-wait timeout) rolls the
        session back and runs ``fn`` again, at most ``retries`` more times, with backoff; then
        ``Conflict`` is raised. Usable as ``@client.transactional`` or
        ``@client.transactional(retries=..)``. ``wrapper.runs()`` is how often ``fn`` ran in
        this thread's last call.

        Warning: ``fn`` runs again from the start on every conflict, so whatever it does
        outside the session ``tx`` — sending mail, calling another service, appending to a
        list, incrementing a counter, printing — happens once per run, not once per commit.
        Keep side effects inside the session (its steps, ``tx.publish`` for messages), or do
        them after the decorated function has returned.

        If ``fn`` catches an error that ended the session (say ``QueryFailed``) and returns
        normally, nothing is committed: the commit raises that error."""
        def decorate(f):
            stats = threading.local()

            def wrapper(*args, **kwargs):
                attempt = 0
                while True:
                    stats.runs = attempt + 1
                    try:
                        with self.session(timeout_ms=timeout_ms, read_only=read_only) as tx:
                            return f(tx, *args, **kwargs)
                    except Conflict:
                        if attempt >= retries:
                            raise
                    pause = min(self.max_backoff, (backoff or self.backoff) * (2 ** attempt))
                    time.sleep(pause * random.uniform(0.5, 1.0))
                    attempt += 1

            wrapper.__name__ = getattr(f, "__name__", "transactional")
            wrapper.__doc__ = getattr(f, "__doc__", None)
            wrapper.__wrapped__ = f
            wrapper.runs = lambda: getattr(stats, "runs", 0)
            return wrapper

        if fn is not None and callable(fn):
            return decorate(fn)
        return decorate

    # -- operations --

    def lookup(self, idempotency_key):
        """The record of the transaction sent with ``idempotency_key`` (GET
        /v1/transactions/{key}) as a ``Result`` with ``state`` ("committed" or "aborted"),
        ``http_status`` (the first answer's) and ``error`` (for an aborted one); None if there
        is no record: none is committed, running or in doubt now (or it is older than the
        retention). While one is running or in doubt, seigod answers 503 ``key_in_flight``,
        raised as ``OutcomeUnknown``... ask again later."""
        path = "/v1/transactions/" + urllib.parse.quote(idempotency_key, safe="")
        status, _, reply = self._call_retrying("GET", path)
        if status == 404:
            return None
        if status >= 300:
            raise _error_from(status, reply)
        return Result(reply, idempotency_key=idempotency_key)

    def status(self):
        """GET /v1/status: what the page and ``seigo check`` show, as a dict."""
        return self._get_json("/v1/status")

    def in_doubt(self):
        """GET /v1/in-doubt: the in-doubt transactions and lock waits, as a dict."""
        return self._get_json("/v1/in-doubt")

    def resolve(self, gid, admin_token=None):
        """POST /v1/in-doubt/{gid}/resolve: a resolver pass now; what it did for ``gid``, as a
        dict. Needs the admin token (``admin_token`` or the client's): Unauthorized/Forbidden
        otherwise; NotFound if ``gid`` is not in doubt."""
        token = admin_token if admin_token is not None else self.admin_token
        headers = {"Authorization": "Bearer " + token} if token else {}
        path = "/v1/in-doubt/%s/resolve" % urllib.parse.quote(gid, safe="")
        try:
            status, _, reply = self._call("POST", path, {}, headers=headers)
        except (_NotSent, _Lost) as e:
            raise Unavailable("cannot reach seigod at %s: %s" % (self.url, e.cause),
                              code="unavailable") from e.cause
        if status >= 300:
            raise _error_from(status, reply)
        return reply

    def metrics_text(self):
        """GET /metrics: the Prometheus text."""
        status, _, reply = self._call_retrying("GET", "/metrics")
        if status >= 300:
            raise _error_from(status, reply)
        return reply

    def healthy(self):
        """True if GET /healthz answers 200."""
        try:
            return self._call_retrying("GET", "/healthz")[0] == 200
        except Unavailable:
            return False

    def ready(self):
        """True if GET /readyz answers 200 (every shard answered seigod's last monitor pass)."""
        try:
            return self._call_retrying("GET", "/readyz")[0] == 200
        except Unavailable:
            return False
