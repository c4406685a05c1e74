"""The retry policy: which failures a stream tries again, how long it waits, and resume.

:class:`RetryPolicy` is frozen configuration plus one pure decision,
:meth:`RetryPolicy.decide`: given the exception an attempt ended with, how many
attempts were made and what that attempt delivered, it says whether to try
again and how long to wait first. :func:`resume_blocker` says whether a stream
that dropped can be continued exactly, and :func:`continuation` builds the
request that continues it. :class:`AttemptLog` is one stream's record of its
attempts and the whole decision after each failure (policy, resume, the time
left). No I/O and no clock (the caller passes the time left); randomness comes
from a ``random.Random`` the caller may pass (tests pin it). The trio shell
only sleeps the wait and sends the next request.

Theory of operation:

* **Before the first token reaches the caller**, a transient failure is
  retried with full-jitter exponential backoff: attempt ``k`` waits a uniform
  random time in ``[0, min(max_backoff, backoff * 2**(k-1))]`` (AWS's "full
  jitter", which spreads a thundering herd best). Transient means: the request
  never got going (``TransportError``: refused, reset, DNS, connect or pool
  timeout), the connection broke or stalled before a token
  (``RemoteDisconnected``, ``StallTimeout``, ``FirstTokenTimeout``), an abort
  (``RequestAborted``), HTTP 408, 409, 500, 502, 503 and 504 (the openai SDK's
  list, less the 5xx that say "never": 501, 505), an error event before any
  token (``InBandError``, unless its ``code`` is a 4xx: vLLM reports a bad
  request, such as an out-of-vocabulary prompt ID, that way), and an empty
  response. A server's ``x-should-retry: true`` / ``false`` header on an HTTP
  error overrides the status, as in the openai SDK.
* **Rate limits**: HTTP 429, and 503 with a ``Retry-After``, get up to
  ``rate_limit_attempts``. A wait the server asked for (``Retry-After`` in
  seconds or as an HTTP date, or ``retry-after-ms``) is kept exactly, up to
  ``max_retry_after``; past it the stream fails at once with an error that
  shows the wait asked for. Without one, attempt ``k`` waits a uniform time
  in ``[rate_limit_backoff, min(max_retry_after, rate_limit_backoff * 2**(k-1))]``.
* **Never retried**: any other HTTP status (400, 401, 403, 404, 422, ...), a
  malformed stream (``ProtocolError`` with a body), ``TotalTimeout`` (the whole
  budget), local validation and misuse (raised before any attempt), and
  cancellation (never caught). No wait runs past ``Timeouts.total``.
* **After a token**, a stream is never retried: the caller has seen it. With
  ``resume=True`` a stream that *drops* (``RemoteDisconnected``,
  ``StallTimeout``, ``RequestAborted``, or a body that ends early) is
  continued instead, when :func:`resume_blocker` finds nothing against it:
  :func:`continuation` sends the prompt plus every ID received, with
  ``max_tokens`` reduced by their number, and the stream loop splices the new
  tokens on. Attempts count resumes too.

Why resume is exact for token IDs, and when tokstream does it: the model's
next-token distribution depends only on the token IDs before it, and vLLM
computes it the same way whether those IDs came in the prompt or were
generated, so conditioning on ``prompt + received`` continues the same
sequence; no ID is lost or repeated, because the continuation's prompt echo
must be the first prompt plus exactly the IDs received (the decoder checks it).

* **Greedy decoding** (``temperature=0`` or ``top_k=1``) gives exactly the IDs
  an uninterrupted run gives, up to floating-point ties between the prompt
  pass and the decode steps.
* **A seeded** stream restarts vLLM's generator at the continuation: the
  result is a fair sample of the same distribution and reproducible (the same
  request dropped at the same point gives the same IDs; ``Done.splices``
  records the points), though not the IDs the uninterrupted run would have
  drawn.
* **Sampling without a seed** is resumed only with ``resume_unseeded=True``:
  the continuation is still a fair sample of the same distribution, but
  nothing can reproduce the spliced sequence, so a caller must ask for it.
* Never resumed, because the continuation would not be the same request:
  ``stop`` strings (vLLM holds back streamed text that may begin one, and
  checks them against the output only, so text could be lost and a stop
  straddling the splice missed; ``stop_token_ids`` are fine),
  ``frequency_penalty`` / ``presence_penalty`` (they count output tokens; the
  received ones would become prompt), ``truncate_prompt_tokens``, structured
  outputs (``structured_outputs``, ``guided_*``, ``response_format``: the
  grammar would restart), and a stream whose ``max_tokens`` all arrived.
* Log-probabilities of the continuation are computed on the same prefix, so
  they are the same numbers (up to the same floating-point effects);
  ``min_tokens`` shrinks like ``max_tokens``; ``repetition_penalty`` sees
  prompt and output alike, so it is unchanged; vLLM's prefix cache holds the
  prompt and the received IDs, so a continuation costs little.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from .._exceptions import (
    FirstTokenTimeout,
    HTTPStatusError,
    InBandError,
    InvalidRequest,
    ProtocolError,
    RemoteDisconnected,
    RequestAborted,
    StallTimeout,
    TokstreamError,
    TotalTimeout,
    TransportError,
)
from .._lazy import lazy_module
from .._statistics import Attempt
from ._request import CompletionRequest

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy", globals())

__all__ = [
    "NO_RETRY",
    "AttemptLog",
    "RetryDecision",
    "RetryPolicy",
    "classify",
    "continuation",
    "resume_blocker",
]

Kind = Literal["never", "transient", "rate_limit", "drop"]

_TRANSIENT_STATUS: Final = frozenset((408, 409, 500, 502, 503, 504))
# Request fields that steer a grammar or schema: a continuation would restart it.
_STRUCTURED: Final = ("structured_outputs", "response_format", "guided_")
# Fields that make a continuation a different request (see the module docs).
_NOT_CONTINUABLE: Final = ("frequency_penalty", "presence_penalty", "truncate_prompt_tokens")
_NAMED: Final = frozenset(f.name for f in dataclasses.fields(CompletionRequest))


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt.

    Attributes:
        retry: Whether to make another attempt.
        wait: Seconds to wait before it (0 when not retrying).
        resume: Whether the next attempt continues a stream that had delivered
            tokens (a splice) rather than starting over.
        reason: Why the stream is not retried (``""`` when it is, or when
            there is nothing worth saying), for the final error's message.
    """

    retry: bool
    wait: float = 0.0
    resume: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a stream retries transient failures, and whether it resumes after a drop.

    The defaults (4 attempts, 250 ms backoff doubling up to 5 s, full jitter; 8
    attempts for rate limits, waiting as asked up to 60 s; no resume) suit one
    vLLM server or a router in front of several. See this module's docs for the
    rules, and for what resume does to sampling.

    Attributes:
        attempts: The most attempts for a transient failure or a resumed drop,
            the first one included (``1``: never retry).
        backoff: The first backoff's upper bound, in seconds; it doubles with
            every attempt.
        max_backoff: The cap on the backoff's upper bound, in seconds.
        rate_limit_attempts: The most attempts when rate-limited (HTTP 429, or
            503 with ``Retry-After``).
        rate_limit_backoff: The shortest wait when rate-limited without a
            ``Retry-After``, in seconds; it doubles with every attempt.
        max_retry_after: The longest wait the client accepts, asked for or
            not, in seconds. A longer ``Retry-After`` fails the stream at once.
        resume: Continue a stream that dropped after delivering tokens, from
            the tokens received, when that is exact and reproducible: greedy
            decoding or a ``seed`` (see the module docs). Off by default: a
            stream never retries once a token was delivered.
        resume_unseeded: Also resume a sampled stream that has no seed (a fair
            sample, but one that nothing can reproduce). Needs ``resume``.

    Raises:
        InvalidRequest: A field is out of range.
    """

    attempts: int = 4
    backoff: float = 0.25
    max_backoff: float = 5.0
    rate_limit_attempts: int = 8
    rate_limit_backoff: float = 5.0
    max_retry_after: float = 60.0
    resume: bool = False
    resume_unseeded: bool = False

    def __post_init__(self) -> None:
        for name in ("attempts", "rate_limit_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"retry.{name}", value, "must be an int >= 1")
        for name in ("backoff", "max_backoff", "rate_limit_backoff", "max_retry_after"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value < math.inf
            ):
                raise InvalidRequest(f"retry.{name}", value, "must be a finite number >= 0")
        for name in ("resume", "resume_unseeded"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequest(f"retry.{name}", getattr(self, name), "must be bool")
        if self.resume_unseeded and not self.resume:
            raise InvalidRequest(
                "retry.resume_unseeded", True, "needs resume=True (it widens what resume does)"
            )

    def decide(
        self,
        exc: TokstreamError,
        *,
        attempt: int,
        tokens: int,
        empty: bool = False,
        cut_short: bool = False,
        rng: random.Random | None = None,
    ) -> RetryDecision:
        """Decide what follows a failed attempt, by the policy alone.

        :class:`AttemptLog` adds what a policy cannot know: whether the request
        can be continued, and the time left.

        Args:
            exc: What the attempt ended with.
            attempt: The failed attempt's number (1 for the first).
            tokens: Token IDs that attempt delivered.
            empty: The response was empty: a clean end of a body without a
                byte (transient).
            cut_short: The body ended cleanly after the stream had begun, before
                it finished (a drop).
            rng: The source of jitter (default: the ``random`` module's).

        Returns:
            Whether to retry, after how long, and whether as a resume.
        """
        kind = classify(exc, tokens=tokens, empty=empty, cut_short=cut_short)
        if kind == "never":
            return RetryDecision(False, reason=_never_reason(exc, tokens) if attempt > 1 else "")
        if kind == "drop" and not self.resume:
            return RetryDecision(
                False,
                reason=(
                    f"not retried: {tokens} tokens had been delivered "
                    "(RetryPolicy(resume=True) continues a dropped stream from them)"
                ),
            )
        limit = self.rate_limit_attempts if kind == "rate_limit" else self.attempts
        if attempt >= limit:
            field = "rate_limit_attempts" if kind == "rate_limit" else "attempts"
            reason = f"gave up: RetryPolicy.{field}={limit} attempts were made" if limit > 1 else ""
            return RetryDecision(False, reason=reason)
        asked = exc.retry_after if isinstance(exc, HTTPStatusError) else None
        if asked is not None:
            if asked > self.max_retry_after:
                return RetryDecision(
                    False,
                    reason=(
                        f"not retried: the server asked to wait {asked:g}s (Retry-After), "
                        f"more than RetryPolicy.max_retry_after={self.max_retry_after:g}s"
                    ),
                )
            return RetryDecision(True, asked, resume=kind == "drop")
        uniform = (rng or random).uniform
        if kind == "rate_limit":
            low = min(self.rate_limit_backoff, self.max_retry_after)
            high = min(self.max_retry_after, self.rate_limit_backoff * 2.0 ** (attempt - 1))
            return RetryDecision(True, uniform(low, max(low, high)))
        high = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return RetryDecision(True, uniform(0.0, high), resume=kind == "drop")


NO_RETRY: Final = RetryPolicy(attempts=1, rate_limit_attempts=1)
"""One attempt, never retried (what ``retry=None`` means)."""


def classify(exc: TokstreamError, *, tokens: int, empty: bool, cut_short: bool) -> Kind:
    """Sort a failed attempt: never retried, transient, rate-limited, or a resumable drop."""
    if isinstance(exc, TotalTimeout):
        return "never"
    dropped = isinstance(exc, (RemoteDisconnected, StallTimeout, RequestAborted)) or (
        cut_short and isinstance(exc, ProtocolError)
    )
    if tokens:
        return "drop" if dropped else "never"
    if isinstance(exc, InBandError):
        # vLLM repeats the HTTP status in `code`: a 4xx says the request itself is
        # bad (an out-of-vocabulary prompt ID, a grammar that does not compile).
        code = _status_code(exc.code)
        if code == 429:
            return "rate_limit"
        return "never" if code is not None and 400 <= code < 500 else "transient"
    if dropped or isinstance(exc, (TransportError, FirstTokenTimeout)):
        return "transient"
    if isinstance(exc, ProtocolError):
        return "transient" if empty else "never"
    if isinstance(exc, HTTPStatusError):
        status = exc.status_code
        limited = status == 429 or (status == 503 and exc.retry_after is not None)
        should = exc.headers.get("x-should-retry")
        if should == "false":
            return "never"
        if limited:
            return "rate_limit"
        if should == "true" or status in _TRANSIENT_STATUS:
            return "transient"
    return "never"


def _status_code(code: int | str | None) -> int | None:
    if isinstance(code, int):
        return code
    return int(code) if isinstance(code, str) and code.isdigit() else None


def _never_reason(exc: TokstreamError, tokens: int) -> str:
    if isinstance(exc, TotalTimeout):
        return "not retried: Timeouts.total is the whole stream's budget"
    if isinstance(exc, HTTPStatusError):
        return f"not retried: HTTP {exc.status_code} is not a transient status"
    if tokens:
        return f"not retried: {tokens} tokens had been delivered"
    return f"not retried: a {type(exc).__name__} is not transient"


def _field(request: CompletionRequest, name: str) -> Any:
    """A field as sent: a named one, or else one of ``extra_body``."""
    if name in _NAMED:
        return getattr(request, name)
    return request.extra_body.get(name)


def resume_blocker(
    request: CompletionRequest, received: int, *, unseeded: bool = False
) -> str | None:
    """Why ``request`` cannot be continued after ``received`` tokens, or ``None`` if it can.

    Args:
        request: The request as the caller made it.
        received: Token IDs received over every attempt so far.
        unseeded: Whether sampling without a seed may be resumed
            (``RetryPolicy.resume_unseeded``).

    Returns:
        ``None``, or the reason (one phrase, for the final error's message).
    """
    budget = request.max_tokens or 16
    if received >= budget:
        return f"all max_tokens={budget} tokens had arrived; only the finish was lost"
    for key in request.extra_body:
        if key.startswith(_STRUCTURED):
            return (
                f"extra_body[{key!r}] steers a grammar or schema, which a continuation "
                "would restart"
            )
    if _field(request, "stop"):
        return (
            "stop strings are set: vLLM holds back text that may begin one and checks them "
            "against the output only, so a continuation could lose text (use stop_token_ids)"
        )
    for name in _NOT_CONTINUABLE:
        if _field(request, name):
            return f"{name} is set: a continuation would treat the received IDs differently"
    temperature = _field(request, "temperature")
    greedy = temperature == 0 or _field(request, "top_k") == 1
    if not greedy and _field(request, "seed") is None and not unseeded:
        shown = "the server's default" if temperature is None else temperature
        return (
            f"sampling (temperature={shown}) without a seed cannot be reproduced after a "
            "splice: set temperature=0 or a seed, or RetryPolicy(resume_unseeded=True)"
        )
    return None


def continuation(request: CompletionRequest, received: npt.NDArray[np.int32]) -> CompletionRequest:
    """Return the request that continues ``request`` after the IDs ``received``.

    The prompt is the original prompt followed by ``received``; ``max_tokens``
    (and ``min_tokens`` in ``extra_body``) shrink by their number. Everything
    else is sent unchanged. Check :func:`resume_blocker` first.
    """
    n = len(received)
    prompt = np.concatenate([request.prompt, received.astype(np.int64)])
    extra: Mapping[str, Any] = request.extra_body
    min_tokens = extra.get("min_tokens")
    if isinstance(min_tokens, int) and not isinstance(min_tokens, bool):
        extra = {**extra, "min_tokens": max(0, min_tokens - n)}
    return dataclasses.replace(
        request, prompt=prompt, max_tokens=(request.max_tokens or 16) - n, extra_body=extra
    )


class AttemptLog:
    """One stream's attempts, and the whole decision after each failure.

    The stream loop owns one. When an attempt fails it calls :meth:`failed`,
    which records the attempt and decides: the policy first, then whether a
    drop can be resumed (:func:`resume_blocker`), then whether the wait fits
    in the time left. If the answer is to retry, the loop sleeps
    ``decision.wait``, calls :meth:`begin` and sends :meth:`next_request`;
    otherwise it calls :meth:`close` with the final error, which puts every
    attempt on the exception and says them in its message.

    Args:
        policy: The stream's retry policy.
        request: The request as the caller made it.
        rng: The source of jitter (default: the ``random`` module's).

    Attributes:
        number: The current attempt's number (1 for the first).
        waited: Seconds slept in backoff so far.
        records: The attempts that ended, in order.
        splices: For each resume, how many IDs had arrived before it.
    """

    __slots__ = (
        "_next_wait",
        "_rng",
        "number",
        "policy",
        "records",
        "request",
        "splices",
        "waited",
    )

    def __init__(
        self, policy: RetryPolicy, request: CompletionRequest, rng: random.Random | None = None
    ) -> None:
        self.policy = policy
        self.request = request
        self._rng = rng
        self.number = 1
        self.waited = 0.0
        self.records: list[Attempt] = []
        self.splices: list[int] = []
        self._next_wait = 0.0  # the backoff slept before the current attempt

    def failed(
        self,
        exc: TokstreamError,
        *,
        tokens: int,
        received: int,
        empty: bool = False,
        cut_short: bool = False,
        time_left: float = math.inf,
        replica: str | None = None,
    ) -> RetryDecision:
        """Record the current attempt's failure; return what to do next.

        Args:
            exc: What the attempt ended with.
            tokens: Token IDs this attempt delivered.
            received: Token IDs delivered over every attempt (a resume's prompt
                appends them).
            empty: The response was empty (no body byte).
            cut_short: The body ended cleanly before the stream finished.
            time_left: Seconds until ``Timeouts.total`` (``inf``: no bound).
            replica: Which replica answered the attempt, if known.

        Returns:
            The decision; when it says not to retry, its ``reason`` explains
            why (for :meth:`close`).
        """
        status = exc.status_code if isinstance(exc, HTTPStatusError) else None
        asked = exc.retry_after if isinstance(exc, HTTPStatusError) else None
        self.records.append(
            Attempt(
                self.number,
                type(exc).__name__,
                exc.message,
                status,
                self._next_wait,
                tokens,
                asked,
                replica,
            )
        )
        decision = self.policy.decide(
            exc,
            attempt=self.number,
            tokens=tokens,
            empty=empty,
            cut_short=cut_short,
            rng=self._rng,
        )
        if decision.retry and received:
            blocker = resume_blocker(self.request, received, unseeded=self.policy.resume_unseeded)
            if blocker is not None:
                return RetryDecision(False, reason=f"not resumed: {blocker}")
            decision = dataclasses.replace(decision, resume=True)
        if decision.retry and decision.wait >= time_left:
            return RetryDecision(
                False,
                reason=(
                    f"not retried: a wait of {decision.wait:.2f}s would pass Timeouts.total "
                    f"({max(0.0, time_left):.2f}s were left)"
                ),
            )
        return decision

    def begin(self, decision: RetryDecision, received: int) -> bool:
        """Start the next attempt, after ``decision.wait`` seconds of backoff.

        ``received`` is the IDs delivered so far: a resume records its splice
        point, once per point (a continuation that fails before a token and is
        tried again splices at the same place).

        Returns:
            Whether this attempt is a new splice.
        """
        self.number += 1
        self.waited += decision.wait
        self._next_wait = decision.wait
        if decision.resume and (not self.splices or self.splices[-1] != received):
            self.splices.append(received)
            return True
        return False

    def next_request(self, received: npt.NDArray[np.int32]) -> CompletionRequest:
        """The request the next attempt sends: the caller's, or its continuation."""
        return continuation(self.request, received) if received.size else self.request

    def succeeded(self, tokens: int, replica: str | None = None) -> tuple[Attempt, ...]:
        """The attempts of a stream whose current attempt finished (empty if it was the first)."""
        if self.number == 1:
            return ()
        last = Attempt(self.number, None, "", None, self._next_wait, tokens, replica=replica)
        return (*self.records, last)

    def close(self, exc: TokstreamError, reason: str = "") -> tuple[Attempt, ...]:
        """Put every attempt on the final ``exc`` and say them in its message; return them.

        With one attempt the message changes only to say why it was not retried
        when that is worth knowing (``reason``: e.g. a ``Retry-After`` past the
        cap, or tokens that a resume would have kept).
        """
        attempts = tuple(self.records)
        exc.attempts = attempts
        notes = []
        if len(attempts) > 1:
            earlier = ", ".join(
                f"#{a.number} {a.error}" + (f" (HTTP {a.status})" if a.status else "")
                for a in attempts[:-1]
            )
            waits = ", ".join(f"{a.waited:.2f}s" for a in attempts[1:])
            notes.append(
                f"{len(attempts)} attempts; backoff waited {self.waited:.2f}s ({waits}); "
                f"earlier failures: {earlier}"
            )
        if reason:
            notes.append(reason)
        if notes:
            exc.message = f"{exc.message} [{'; '.join(notes)}]"
            exc.args = (exc.message, *exc.args[1:])
        return attempts
