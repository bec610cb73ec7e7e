"""The files users upload and runs make, as the handlers reach them: attachments, documents, produced files.

An attachment or a document is a file under the data dir and a row in the store.  This
service keeps the two together (a file written is recorded, or removed again), so that
handlers neither write to the store nor know its SQL.  Names on disk are server-made:
data_dir/attachments/<bucket>/<owner folder>/<uuid>.<ext> and data_dir/documents/<uuid>.
Produced files are read from the event log (store/produced_files.py); hiding a task's
is a mark on the task, never a deletion.

Reading and writing files blocks, so it runs in the default executor, off the event loop.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from store import Store, produced_files
from store import attachments as attachments_sql
from store import documents as documents_sql
from store import tasks as tasks_sql
from store.attachments import Attachment
from store.produced_files import ProducedFile
from store.tasks import TaskRow

BUCKET = re.compile(r"[A-Za-z0-9_-]{1,64}")
STORED_PATH = re.compile(r"[0-9a-f]{32}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.[a-z0-9]{2,4}")

T = TypeVar("T")


def store_file(path: Path, data: bytes) -> str:
    """Write `data` to `path` durably (a temporary file, fsync, rename); return its SHA-256 (hex).

    Blocking: run it in an executor.  Fails if the temporary file exists (names are server-made).
    """
    digest = hashlib.sha256(data).hexdigest()
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
    return digest


def disk_path(root: Path, bucket: str, path: str) -> Path:
    """Where a stored attachment lives; ValueError unless both names are server-made shapes under `root`."""
    if not BUCKET.fullmatch(bucket) or not STORED_PATH.fullmatch(path):
        raise ValueError(f"not a stored attachment: {bucket!r} {path!r}")
    target = root / bucket / path
    if not target.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"outside the attachments directory: {target}")
    return target


async def _off_loop(work: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, work, *args)


class Files:
    """The attachments, documents and produced files of every user, for the handlers."""

    def __init__(self, db: Store, data_dir: Path) -> None:
        self.db = db
        self.attachments_dir = data_dir / "attachments"
        self.documents_dir = data_dir / "documents"

    # -- attachments ---------------------------------------------------------------

    async def save_attachment(self, bucket: str, path: str, user_id: str, name: str, media_type: str,
                              data: bytes, thread_id: str | None) -> Attachment:
        """Store `data` as the attachment at (`bucket`, `path`) and record it; its row.

        ValueError unless both names are server-made shapes; when the record cannot be
        written (store.Conflict if the path is taken) the file is removed again.
        """
        target = disk_path(self.attachments_dir, bucket, path)
        digest = await _off_loop(store_file, target, data)
        try:
            return await self.db.write(lambda tx: attachments_sql.insert(
                tx, bucket, path, user_id, name, media_type, len(data), digest, thread_id))
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    async def attachment_at(self, bucket: str, path: str) -> Attachment | None:
        """The attachment recorded at (`bucket`, `path`), whoever owns it; None when there is none."""
        return await self.db.read(lambda c: attachments_sql.get(c, bucket, path))

    async def attachment_bytes(self, bucket: str, path: str) -> bytes:
        """The content of the attachment at (`bucket`, `path`); FileNotFoundError when its file is gone."""
        return await _off_loop(disk_path(self.attachments_dir, bucket, path).read_bytes)

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
        doc_id = str(uuid.uuid4())
        path = self.documents_dir / doc_id
        await _off_loop(store_file, path, data)
        doc = {"id": doc_id, "user_id": user_id, "knowledge_id": knowledge_id, "filename": filename,
               "media_type": media_type, "size": len(data)}
        try:
            return await self.db.write(lambda tx: documents_sql.insert(tx, doc, chunks, quota))
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    async def document(self, document_id: str) -> dict[str, Any] | None:
        """The document's row, whoever owns it; None when there is none."""
        return await self.db.read(lambda c: documents_sql.get(c, document_id))

    async def documents_of(self, user_id: str, knowledge_id: str | None = None) -> list[dict[str, Any]]:
        """The user's documents (of one knowledge base when given), oldest first."""
        return await self.db.read(lambda c: documents_sql.list_for(c, user_id, knowledge_id))

    async def delete_document(self, document_id: str) -> None:
        """The document, its chunks and then its file are gone: its text leaves search, its bytes the quota."""
        await self.db.write(lambda tx: documents_sql.delete(tx, document_id))
        path = self.documents_dir / document_id
        await _off_loop(lambda: path.unlink(missing_ok=True))

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
