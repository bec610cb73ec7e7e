"""The files users upload and runs make, as the handlers reach them: attachments, documents, produced files.

An attachment or a document is a file's content and a row in the store.  This service keeps
the two together (a file written is recorded, or removed again), so that handlers neither
write to the store nor know its SQL.  Names are server-made: attachments/<bucket>/<owner
folder>/<uuid>.<ext> and documents/<uuid>.  The contents live where every instance of the
server finds them: under the data dir with the store of one process (`DiskFiles`), in the
store when instances share it (`StoredFiles`, store/blobs.py; SPEC section 14).
Produced files are read from the event log (store/produced_files.py); hiding a task's
is a mark on the task, never a deletion.

Reading and writing files blocks, so it runs in the default executor, off the event loop.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from store import Store, blobs, produced_files
from store import attachments as attachments_sql
from store import documents as documents_sql
from store import tasks as tasks_sql
from store.attachments import Attachment
from store.ids import uuid7
from store.produced_files import ProducedFile
from store.tasks import TaskRow

BUCKET = re.compile(r"[A-Za-z0-9_-]{1,64}")
STORED_PATH = re.compile(r"[0-9a-f]{32}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.[a-z0-9]{2,4}")

T = TypeVar("T")
log = logging.getLogger("parley.files")


def store_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` durably (a temporary file, fsync, rename).

    Blocking: run it in an executor.  Fails if the temporary file exists (names are server-made).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


async def _off_loop(work: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, work, *args)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Contents(Protocol):
    """Where the contents of files are kept, by server-made relative name."""

    async def save(self, name: str, data: bytes) -> None:
        """Keep `data` as `name` (a new name), durably."""
        ...

    async def load(self, name: str) -> bytes:
        """The content kept as `name`; FileNotFoundError when there is none."""
        ...

    async def remove(self, name: str) -> None:
        """`name` is gone, whether or not it was there."""
        ...


class DiskFiles:
    """Contents as files under one directory (the data dir): the store of one process."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        path = self.root / name
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"outside the data directory: {name!r}")
        return path

    async def save(self, name: str, data: bytes) -> None:
        await _off_loop(store_file, self._path(name), data)

    async def load(self, name: str) -> bytes:
        return await _off_loop(self._path(name).read_bytes)

    async def remove(self, name: str) -> None:
        path = self._path(name)
        await _off_loop(lambda: path.unlink(missing_ok=True))


class StoredFiles:
    """Contents in the store (store/blobs.py): every instance sharing it serves every file."""

    def __init__(self, db: Store) -> None:
        self.db = db

    async def save(self, name: str, data: bytes) -> None:
        await blobs.put(self.db, name, data)

    async def load(self, name: str) -> bytes:
        data = await blobs.get(self.db, name)
        if data is None:
            raise FileNotFoundError(name)
        return data

    async def remove(self, name: str) -> None:
        await blobs.delete(self.db, name)


def attachment_name(bucket: str, path: str) -> str:
    """The name of a stored attachment's content; ValueError unless both names are server-made shapes."""
    if not BUCKET.fullmatch(bucket) or not STORED_PATH.fullmatch(path):
        raise ValueError(f"not a stored attachment: {bucket!r} {path!r}")
    return f"attachments/{bucket}/{path}"


class Files:
    """The attachments, documents and produced files of every user, for the handlers.

    Their contents go under `data_dir` with the store of one process, into the store when
    instances share it."""

    def __init__(self, db: Store, data_dir: Path) -> None:
        self.db = db
        self.contents: Contents = StoredFiles(db) if db.shared else DiskFiles(data_dir)

    async def _recorded(self, name: str, data: bytes, record: Callable[[Any], T]) -> T:
        """Keep `data` as `name`, then run `record` in the store; when the record fails, the content goes again."""
        await self.contents.save(name, data)
        try:
            return await self.db.write(record)
        except BaseException:
            await _quietly(self.contents.remove(name), name)
            raise

    # -- attachments ---------------------------------------------------------------

    async def save_attachment(self, bucket: str, path: str, user_id: str, name: str, media_type: str,
                              data: bytes, thread_id: str | None) -> Attachment:
        """Store `data` as the attachment at (`bucket`, `path`) and record it; its row.

        ValueError unless both names are server-made shapes; when the record cannot be
        written (store.Conflict if the path is taken) the file is removed again.
        """
        content = attachment_name(bucket, path)
        digest = await _off_loop(_sha256, data)
        return await self._recorded(content, data, lambda tx: attachments_sql.insert(
            tx, bucket, path, user_id, name, media_type, len(data), digest, thread_id))

    async def attachment_at(self, bucket: str, path: str) -> Attachment | None:
        """The attachment recorded at (`bucket`, `path`), whoever owns it; None when there is none."""
        return await self.db.read(lambda c: attachments_sql.get(c, bucket, path))

    async def attachment_bytes(self, bucket: str, path: str) -> bytes:
        """The content of the attachment at (`bucket`, `path`); FileNotFoundError when its file is gone."""
        return await self.contents.load(attachment_name(bucket, path))

    # -- documents -----------------------------------------------------------------

    async def document_usage(self, user_id: str) -> int:
        """The bytes of the user's documents: what counts against their quota."""
        return await self.db.read(lambda c: documents_sql.usage(c, user_id))

    async def save_document(self, user_id: str, knowledge_id: str, filename: str, media_type: str,
                            data: bytes, chunks: list[str], quota: int) -> dict[str, Any]:
        """Store `data` as a new document of the knowledge base, with its text `chunks`; its row.

        store.documents.QuotaExceeded when the user's documents would take more than `quota`
        bytes (checked in the writer's transaction); then, or when the record fails otherwise,
        the file is removed again.
        """
        doc_id = uuid7()
        doc = {"id": doc_id, "user_id": user_id, "knowledge_id": knowledge_id, "filename": filename,
               "media_type": media_type, "size": len(data)}
        return await self._recorded(f"documents/{doc_id}", data, lambda tx: documents_sql.insert(tx, doc, chunks, quota))

    async def document(self, document_id: str) -> dict[str, Any] | None:
        """The document's row, whoever owns it; None when there is none."""
        return await self.db.read(lambda c: documents_sql.get(c, document_id))

    async def documents_of(self, user_id: str, knowledge_id: str | None = None) -> list[dict[str, Any]]:
        """The user's documents (of one knowledge base when given), oldest first."""
        return await self.db.read(lambda c: documents_sql.list_for(c, user_id, knowledge_id))

    async def delete_document(self, document_id: str) -> None:
        """The document, its chunks and then its file are gone: its text leaves search, its bytes the quota."""
        await self.db.write(lambda tx: documents_sql.delete(tx, document_id))
        await self.contents.remove(f"documents/{document_id}")

    # -- produced files ------------------------------------------------------------

    async def produced_files(self, task_ids: list[str]) -> dict[str, list[ProducedFile]]:
        """The files each task produced, oldest first, hidden or not (see `produced_files.hidden`)."""
        return await self.db.read(lambda c: produced_files.files_of_tasks(c, task_ids))

    async def media_tasks(self, task_ids: list[str], user_id: str) -> dict[str, tuple[TaskRow, list[ProducedFile]]]:
        """The user's tasks among `task_ids`, by id, each with the files it produced; unknown ids and
        other users' tasks are left out."""
        rows = await self.db.read(lambda c: tasks_sql.get_many(c, task_ids))
        own = {t.id: t for t in rows if t.user_id == user_id}
        files = await self.produced_files(list(own))
        return {task_id: (task, files.get(task_id, [])) for task_id, task in own.items()}

    async def produced_files_of_thread(self, thread_id: str) -> list[ProducedFile]:
        """The files the thread's tasks produced, oldest first, but those of tasks whose files are hidden."""
        return await self.db.read(lambda c: produced_files.files_of_thread(c, thread_id))

    async def hide_produced_files(self, task_id: str) -> bool:
        """Hide the task's files from the media routes (idempotent); False when there is no such task."""
        return await self.db.write(lambda tx: produced_files.hide(tx, task_id))


async def _quietly(work: Awaitable[None], name: str) -> None:
    """Undo a write on the way out of a failure: its own failure is logged, the first one raised."""
    try:
        await work
    except Exception:
        log.warning("could not remove %s after its record failed", name, exc_info=True)
