"""The gate on Gradio's queue (issue 16, compute and the memory of page-less sessions).

`Gate` sits on `Queue.push`, the one place `/gradio_api/queue/join` and `/gradio_api/call/*` put an event in line.
Per group ("compute", "train", "push") each visitor (`client_address`, and the session) may have at most
`PER_VISITOR[group]` events queued or running: a further one is refused at once (HTTP 429), and a visitor's only
event goes ahead of the second events of others (round robin). `Listeners` counts who reads the result streams, so
an event nobody listens for is dropped (or stopped at its next yield), and a page-less session's state goes
`FORGET_S` after its event finished. `install(demo)` puts both, and the watcher, on a Blocks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import gradio as gr

from genapp.ui.limits.disk import FILE_AGE_S, cache_schedule, export_root, sweep


# -- who is asking --------------------------------------------------------------------------------------------------
def _internal(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback


def client_address(request: Any) -> str:
    """The visitor's address: the first X-Forwarded-For address when the connection comes from a proxy on a
    private or loopback address (as on Spaces), else the connection's own address."""
    client = getattr(request, "client", None)
    peer = getattr(client, "host", None) or ""
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for", "") if _internal(peer) else ""
    first = forwarded.split(",")[0].strip()
    return first[:64] if first else peer


# -- the gate ---------------------------------------------------------------------------------------------------------
PER_VISITOR = {"compute": 2, "train": 1, "push": 1}  # events queued or running, per address and per session
GRACE_S = float(os.environ.get("GENAPP_LISTEN_GRACE_S", "10"))  # time a client has to open its result stream
WAIT = ("You already have {n} {group} request(s) waiting or running; wait for them to finish, then try again.")
DROPPED = "Dropped: nobody read this request's result within {grace:g} s of sending it."
STOPPED = "Stopped: nobody read this request's result within {grace:g} s of sending it."
_CALL_STREAM = re.compile(r"/gradio_api/call/(?:v2/)?[^/]+/([A-Za-z0-9_-]+)/?$")
_HEARTBEAT = re.compile(r"/gradio_api/heartbeat/([A-Za-z0-9_-]+)/?$")
FORGET_S = float(os.environ.get("GENAPP_FORGET_S", "30"))  # a page-less session's state goes this long after
PAGE_MEMORY_S = 600.0  # a session whose heartbeat ended this recently keeps its state (it may reconnect)


class Gate:
    """Per-visitor caps and the listener check on one Blocks' queue; `counts` says what it refused and dropped."""

    def __init__(self, per_visitor: dict[str, int] | None = None, grace_s: float = GRACE_S):
        self.per_visitor = dict(PER_VISITOR if per_visitor is None else per_visitor)
        self.grace_s = grace_s
        self.listening: Counter[str] = Counter()  # session -> open result streams (set by `Listeners`)
        self.pages: Counter[str] = Counter()  # session -> open heartbeat streams (a page or a gradio_client)
        self.paged: dict[str, float] = {}  # session -> when its last heartbeat stream ended
        self._finished: list[tuple[float, str]] = []  # (when, session) of events done in page-less sessions
        self.tracking = False  # True once `Listeners` is in the app: only then is "nobody listens" known
        self.counts: Counter[str] = Counter()
        self.queue: Any = None
        self._send: Any = None
        self._lock: asyncio.Lock | None = None

    # -- what is in line --
    def in_flight(self) -> list[Any]:
        """Every event queued or running (not those whose result was sent: Gradio keeps them a moment longer)."""
        queue = self.queue
        waiting = [e for q in list(queue.event_queue_per_concurrency_id.values()) for e in list(q.queue)]
        running = [e for job in list(queue.active_jobs) if job for e in job]
        return [e for e in waiting + running if not getattr(e, "_genapp_done", False)]

    def attach(self, queue: Any) -> None:
        """Wrap `queue.push` and `queue.send_message` (once per queue)."""
        from gradio.server_messages import ProcessCompletedMessage

        if getattr(queue, "_genapp_gate", None) is self:
            return
        self.queue, original, send = queue, queue.push, queue.send_message

        async def push(body, request, username):
            return await self._push(original, body, request, username)

        def send_message(event, message):
            if isinstance(message, ProcessCompletedMessage):
                event._genapp_done = True
                if self.tracking and not self.pages[event.session_hash]:
                    self._finished.append((time.monotonic(), event.session_hash))
            return send(event, message)

        queue.push, queue.send_message, queue._genapp_gate = push, send_message, self
        self._send = send  # Gradio's own, for a message that must not mark its event done

    async def _push(self, original, body, request, username):
        from fastapi import HTTPException

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one push at a time: the checks below and Gradio's append see the same line
            fn = self.queue.blocks.fns.get(body.fn_index) if body.fn_index is not None else None
            events = self.in_flight()
            max_size = self.queue.max_size
            if fn is not None and fn.queue and max_size is not None and len(events) >= max_size:
                self.counts["refused_full"] += 1
                return False, f"The app is busy ({len(events)} requests in line); try again in a minute.", "queue_full"
            cap = self.per_visitor.get(fn.concurrency_id) if fn is not None else None
            if cap is not None:
                address, session = client_address(request), body.session_hash
                mine = [e for e in events if e.concurrency_id == fn.concurrency_id
                        and ((session and e.session_hash == session) or client_address(e.request) == address)]
                if len(mine) >= cap:
                    self.counts["refused_visitor"] += 1
                    raise HTTPException(status_code=429, detail=WAIT.format(n=len(mine), group=fn.concurrency_id))
            result = await original(body, request, username)
            if cap is not None and result[0] and (event := self.queue.event_ids_to_events.get(result[1])):
                self.fair(event)
            return result

    def fair(self, event: Any) -> None:
        """Put a visitor's only event in line ahead of the events of visitors who already have one queued or
        running (round robin), so a visitor who keeps two in line delays the others by at most one of theirs."""
        line = self.queue.event_queue_per_concurrency_id.get(event.concurrency_id)
        if line is None or event not in line.queue:
            return

        def visitor(e: Any) -> tuple[str, str]:
            return client_address(e.request), e.session_hash

        def same(a: tuple[str, str], b: tuple[str, str]) -> bool:
            return a[0] == b[0] or a[1] == b[1]

        mine = visitor(event)
        ahead = [visitor(e) for job in list(self.queue.active_jobs) if job for e in job
                 if e.concurrency_id == event.concurrency_id and not getattr(e, "_genapp_done", False)]
        if any(same(mine, a) for a in ahead):
            return
        for i, waiting in enumerate(line.queue):
            if waiting is event:
                return
            them = visitor(waiting)
            if same(them, mine):
                return  # not this visitor's only event
            if any(same(them, a) for a in ahead):  # another visitor's second: this one goes first
                line.queue.remove(event)
                line.queue.insert(i, event)
                return
            ahead.append(them)

    # -- clients that left --
    def abandoned(self, event: Any, now: float) -> bool:
        return (self.tracking and event.concurrency_id in self.per_visitor and not self.listening[event.session_hash]
                and now - event.enqueue_time > self.grace_s)

    def _complete(self, event: Any, why: str, running: bool) -> None:
        """End `event`'s result stream with the error `why` (a reader who comes late reads it, then the stream
        closes). A dropped event is done (the wrapped send_message marks it so); a running one still holds its
        worker and counts against its visitor until it returns, so its message goes out unmarked."""
        from gradio.server_messages import ProcessCompletedMessage
        from gradio.utils import error_payload

        message = gr.Error(why.format(grace=self.grace_s), print_exception=False)
        send = self._send if running else self.queue.send_message
        send(event, ProcessCompletedMessage(output=error_payload(message, True), success=False))

    async def drop_abandoned(self) -> None:
        """Drop waiting events nobody listens for (a late reader gets DROPPED); stop running ones (a late reader
        gets STOPPED: Gradio sends nothing more for an event it no longer deems alive, so without it the reader's
        stream would wait forever)."""
        queue, now = self.queue, time.monotonic()
        for job in list(queue.active_jobs):
            for event in job or []:
                if event.alive and self.abandoned(event, now):
                    self._complete(event, STOPPED, running=True)  # first: a dead event's messages are not sent
                    event.alive = False  # a generator ends at its next yield; its output goes nowhere
                    self.counts["stopped_abandoned"] += 1
                    _log(f"stopped {event.fn.api_name or event.fn._id}: nobody listened for {self.grace_s:g} s")
        async with queue.delete_lock:
            for line in list(queue.event_queue_per_concurrency_id.values()):
                for event in [e for e in line.queue if self.abandoned(e, now)]:
                    line.queue.remove(event)
                    queue.event_ids_to_events.pop(event._id, None)
                    self._complete(event, DROPPED, running=False)
                    self.counts["dropped_abandoned"] += 1
                    _log(f"dropped {event.fn.api_name or event.fn._id}: nobody listened for {self.grace_s:g} s")

    def forget_pageless(self, after_s: float = FORGET_S) -> None:
        """Drop the state (models, kept chain) of sessions without a page: a client that never opened a heartbeat
        (raw /gradio_api/call, one session per request) cannot come back for it, and Gradio would keep it an hour.
        A session goes `after_s` after its last event finished, with no heartbeat for PAGE_MEMORY_S, nothing in
        line."""
        now, holder = time.monotonic(), getattr(getattr(self.queue, "server_app", None), "state_holder", None)
        for session, ended in list(self.paged.items()):
            if now - ended > PAGE_MEMORY_S:
                del self.paged[session]
        due = [s for t, s in self._finished if now - t >= after_s]
        self._finished = [(t, s) for t, s in self._finished if now - t < after_s]
        busy = {e.session_hash for e in self.in_flight()}
        for session in set(due):
            if self.pages[session] or session in self.paged or session in busy or holder is None:
                continue
            if session in holder.session_data:
                holder.delete_state(session)  # calls the states' delete callbacks (Session.close)
                with holder.lock:
                    holder.session_data.pop(session, None)
                    holder.time_last_used.pop(session, None)
                self.counts["forgotten_sessions"] += 1

    def sweep_gradio(self) -> None:
        """Gradio's own delete_cache, run here too: its task walks the upload set in a worker thread while uploads
        add to it, and the first "set changed size during iteration" ends that task for good (the soak's uploads
        piled up). Here it runs on the event loop, where uploads are added, and a failed round is retried."""
        from gradio.route_utils import delete_files_created_by_app

        delete_files_created_by_app(self.queue.blocks, FILE_AGE_S)

    def prune(self) -> None:
        """Forget pending event ids of sessions whose message queue Gradio already let go (its LRU of 2,000):
        nobody can read them, and Gradio keeps them forever for a client that never reads."""
        queue = self.queue
        live = set(queue.event_ids_to_events)
        for session, ids in list(queue.pending_event_ids_session.items()):
            if session not in queue.pending_messages_per_session and not self.listening[session] and not ids & live:
                queue.pending_event_ids_session.pop(session, None)

    async def watch(self, period_s: float = 0.25) -> None:
        """Every `period_s`: drop abandoned events; every FILE_AGE_S / 4: sweep old exports, prune."""
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(period_s)
            if self.queue is None:
                continue
            try:
                await self.drop_abandoned()
                self.forget_pageless()
                if time.monotonic() - last_sweep >= cache_schedule()[0]:
                    last_sweep = time.monotonic()
                    self.prune()
                    self.counts["swept"] += await asyncio.to_thread(sweep, export_root(), FILE_AGE_S)
                    self.sweep_gradio()
            except Exception as error:  # the watcher must outlive any one bad round
                _log(f"watcher: {type(error).__name__}: {error}")

    # -- result streams: who listens --
    def stream_session(self, scope: dict) -> str | None:
        """The session a GET of a result stream reads (/gradio_api/queue/data, /gradio_api/call/NAME/EVENT)."""
        path = scope.get("path", "")
        if path.endswith("/gradio_api/queue/data"):
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash")
            return values[0] if values else None
        match = _CALL_STREAM.search(path)
        if match and self.queue is not None:
            event_id = match.group(1)
            event = self.queue.event_ids_to_events.get(event_id)
            return event.session_hash if event is not None else event_id
        return None


class Listeners:
    """ASGI middleware: counts the open result streams per session in `gate.listening`, and the heartbeat streams
    (a page, a gradio_client) in `gate.pages`."""

    def __init__(self, app: Any, gate: Gate):
        self.app, self.gate = app, gate
        gate.tracking = True

    async def __call__(self, scope, receive, send):
        get = scope.get("type") == "http" and scope.get("method") == "GET"
        if get and (page := _HEARTBEAT.search(scope.get("path", ""))):
            session = page.group(1)
            self.gate.pages[session] += 1
            try:
                return await self.app(scope, receive, send)
            finally:
                self.gate.pages[session] -= 1
                if self.gate.pages[session] <= 0:
                    del self.gate.pages[session]
                self.gate.paged[session] = time.monotonic()
        session = self.gate.stream_session(scope) if get else None
        if session is None:
            return await self.app(scope, receive, send)
        self.gate.listening[session] += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.gate.listening[session] -= 1
            if self.gate.listening[session] <= 0:
                del self.gate.listening[session]


def _log(message: str) -> None:
    print(f"genapp.limits: {message}", file=sys.stderr, flush=True)


def install(demo: gr.Blocks, gate: Gate | None = None) -> Gate:
    """Put `gate` (a new Gate by default) on `demo`: its queue's push is gated at launch (whichever queue
    `demo.queue(...)` made), the listener middleware and the watcher join the app. Returns the gate."""
    from contextlib import asynccontextmanager

    from starlette.middleware import Middleware

    gate = gate or Gate()
    launch = demo.launch

    def gated_launch(*args, **kwargs):
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", ()), Middleware(Listeners, gate=gate)]
        user_lifespan = app_kwargs.get("lifespan")

        @asynccontextmanager
        async def lifespan(app):
            task = asyncio.create_task(gate.watch())
            try:
                if user_lifespan is None:
                    yield
                else:
                    async with user_lifespan(app) as state:
                        yield state
            finally:
                task.cancel()

        app_kwargs["lifespan"] = lifespan
        gate.attach(demo._queue)
        return launch(*args, app_kwargs=app_kwargs, **kwargs)

    demo.launch = gated_launch
    demo.genapp_gate = gate
    return gate
