"""`--workers N`: one instance as N processes on one machine, sharing its port (SPEC 14).

The supervisor binds the sockets, then forks the workers before it has an event loop, a thread
or a database connection (forking a process that has them is unsafe), so each worker opens its
own: its own store connections, hub and RunManager, and its own instance id on the shared store.
Each worker listens on a socket of its own, all bound to the one port with SO_REUSEPORT: the
kernel spreads new connections evenly over them (on one shared socket, whichever worker wakes
first takes a whole burst of connections, and the other core idles).

- SIGTERM or SIGINT to the supervisor: the workers drain (each as one server would) and the
  supervisor exits when they all have, 0 when every one drained cleanly.  A second signal
  kills them at once (exit 1).  A worker drains once, however many of the two it gets: Ctrl-C
  reaches the whole process group, and systemd signals every process of a unit.
- A worker that dies while the instance runs (a crash, kill -9) is logged and replaced; the
  runs it was running end `failed`/`interrupted` when their leases run out, as those of any
  instance that dies.  The connections the kernel gives its socket meanwhile wait for the
  replacement.  A replacement that dies before it listens is not replaced again.  The socket of
  a worker that is not replaced (that one, or one that has drained) is closed: the others take
  every connection.
- A worker whose supervisor is gone (kill -9) drains and exits rather than serve unsupervised.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("parley.workers")

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass
class WorkerSlot:
    """What a worker process is given: the supervisor's sockets, and the pipes to it."""

    index: int
    sockets: list[socket.socket]  # this worker's: bound to the port with SO_REUSEPORT
    ready_fd: int  # write a byte once listening; closed by the worker's exit
    supervisor_fd: int  # read end of a pipe whose only writer is the supervisor: EOF when it is gone

    def ready(self) -> None:
        """Tell the supervisor this worker is listening."""
        try:
            os.write(self.ready_fd, b"r")
        except BrokenPipeError:  # the supervisor is gone: supervisor_fd is at its end, and the worker drains
            pass


@dataclass
class _Worker:
    index: int
    pid: int
    ready_fd: int  # the supervisor's read end of the worker's ready pipe
    replacement: bool
    ready: bool = False


class Supervisor:
    """Forks `count` workers running `work(slot)` (its return value is the worker's exit code),
    calls `on_ready` once when every first worker listens, and returns the instance's exit code
    when they all have exited: 0 if they were asked to and drained cleanly."""

    def __init__(self, listeners: list[list[socket.socket]], work: Callable[[WorkerSlot], int],
                 on_ready: Callable[[], None]) -> None:
        self.count = len(listeners)
        self.listeners = listeners  # worker i's sockets: listeners[i]
        self.work = work
        self.on_ready = on_ready
        self.workers: dict[int, _Worker] = {}  # by ready_fd
        self.started = False  # every first worker has listened
        self.stopping = False  # the workers were asked to stop: none is replaced
        self.signals = 0
        self.failure = 0  # the exit code of the first worker that failed, for the supervisor's own
        self._life_r, self._life_w = os.pipe()

    def run(self) -> int:
        """Start the workers, supervise them until they have all exited, and give the exit code."""
        if threading.active_count() > 1:
            raise RuntimeError("the workers must be forked before this process starts a thread")
        with _signals_blocked():
            for sig in _STOP_SIGNALS:
                signal.signal(sig, self._on_signal)
            self._fork(0, replacement=False)  # the others once it listens: see _listening
        while self.workers:
            readable, _, _ = select.select(list(self.workers), [], [])
            for fd in readable:
                self._heard_from(self.workers[fd])
        os.close(self._life_r)
        os.close(self._life_w)
        return self.failure

    # -- the workers ------------------------------------------------------------

    def _fork(self, index: int, replacement: bool) -> None:
        ready_r, ready_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(self._worker_main(WorkerSlot(index, self.listeners[index], ready_w, self._life_r), ready_r))
        os.close(ready_w)
        self.workers[ready_r] = _Worker(index, pid, ready_r, replacement)

    def _worker_main(self, slot: WorkerSlot, ready_r: int) -> int:
        """In the forked child: forget the supervisor's parts, run the worker, give its exit code."""
        code = 1
        try:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            for fd in (ready_r, self._life_w, *self.workers):
                os.close(fd)
            for index, sockets in enumerate(self.listeners):  # a socket kept open here would outlive its worker
                if index != slot.index:
                    _close(sockets)
            code = self.work(slot)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", slot.index)  # one record (one JSON object with --log-format json)
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        return code

    def _heard_from(self, worker: _Worker) -> None:
        """The worker's ready pipe is readable: it is listening, or it has exited."""
        if os.read(worker.ready_fd, 64):
            worker.ready = True
            if not self.started:
                self._listening()
            return
        os.close(worker.ready_fd)
        del self.workers[worker.ready_fd]
        _, status = os.waitpid(worker.pid, 0)
        self._exited(worker, os.waitstatus_to_exitcode(status))

    def _listening(self) -> None:
        """A first worker listens.  The first one starts alone: what it makes once in the data dir and
        the store is there for the others, and a config that does not fit fails once, in it."""
        if len(self.workers) < self.count:
            with _signals_blocked():
                if not self.stopping:
                    for index in range(1, self.count):
                        self._fork(index, replacement=False)
        elif all(w.ready for w in self.workers.values()):
            self.started = True
            self.on_ready()

    def _exited(self, worker: _Worker, code: int) -> None:
        how = f"exited with {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"
        name = f"worker {worker.index} (pid {worker.pid})"
        replaced = self.started and not self.stopping and (worker.ready or not worker.replacement)
        if not replaced:  # no connection is to wait for a worker that is not coming back: the others take them all
            _close(self.listeners[worker.index])
        if self.stopping:
            stopped = code == 0 or (code == -signal.SIGTERM and not worker.ready)  # stopped before it listened
            log.log(logging.INFO if stopped else logging.WARNING, "%s %s", name, how)
            self._failed(0 if stopped else code)
        elif not self.started:
            log.error("%s %s before it listened: stopping the instance", name, how)
            self._failed(code or 1)
            self._stop_all(signal.SIGTERM)
        elif not replaced:
            log.error("%s %s before it listened: not replaced again (%d worker(s) left)", name, how, len(self.workers))
            self._failed(code or 1)
        else:
            log.warning("%s %s; its runs end when their leases run out; starting another", name, how)
            with _signals_blocked():
                if self.stopping:
                    _close(self.listeners[worker.index])
                else:
                    self._fork(worker.index, replacement=True)

    def _failed(self, code: int) -> None:
        if code != 0 and self.failure == 0:
            self.failure = code if code > 0 else 1

    # -- signals ----------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self.stopping = True
        if self.signals == 1:
            log.info("received %s: draining %d worker(s)", signal.Signals(signum).name, len(self.workers))
            self._stop_all(signal.SIGTERM)
        else:
            log.warning("second signal: stopping the workers at once")
            self._stop_all(signal.SIGKILL)

    def _stop_all(self, signum: int) -> None:
        self.stopping = True
        for worker in list(self.workers.values()):
            try:
                os.kill(worker.pid, signum)
            except ProcessLookupError:  # exited, not yet reaped
                pass


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


class _signals_blocked:
    """SIGTERM and SIGINT wait while the supervisor forks, so that none reaches a child before it
    has put back the default handlers, nor the supervisor between two forks."""

    def __enter__(self) -> None:
        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old)
