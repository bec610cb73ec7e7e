"""runs/files.py on both stores: the contents of attachments and documents go under the data dir with
the store of one process and into the store when instances share it (SPEC section 14); either
way a content whose record fails is removed again, and a deleted document's content goes."""
from __future__ import annotations

import hashlib
import uuid

import pytest

from runs.files import DiskFiles, Files, StoredFiles
from store import Conflict
from store.documents import QuotaExceeded
from tests.shared_state.kept import forget, kept, kept_names

FOLDER = "0" * 32



@pytest.fixture
def files(open_store, tmp_path):
    return Files(open_store, tmp_path / "data")


def a_path() -> str:
    return f"{FOLDER}/{uuid.uuid4()}.txt"


async def test_an_attachment_is_kept_where_every_instance_finds_it(open_store, files, tmp_path):
    assert isinstance(files.contents, StoredFiles if open_store.shared else DiskFiles)
    path, data = a_path(), b"hello attachment\n" * 100
    row = await files.save_attachment("bucket", path, "ann", "a.txt", "text/plain", data, None)
    assert (row.user_id, row.size, row.sha256) == ("ann", len(data), hashlib.sha256(data).hexdigest())
    assert await files.attachment_bytes("bucket", path) == data
    assert await kept(open_store, tmp_path / "data", f"attachments/bucket/{path}") == data
    on_disk = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "attachments" in p.parts]
    assert len(on_disk) == (0 if open_store.shared else 1)  # nothing on this instance's disk when the store is shared


async def test_a_taken_name_is_refused_and_its_content_kept(open_store, files):
    path = a_path()
    await files.save_attachment("bucket", path, "ann", "a.txt", "text/plain", b"first", None)
    if open_store.shared:  # the content is refused before the record (on disk, names are uuids: never taken)
        with pytest.raises(Conflict):
            await files.save_attachment("bucket", path, "bob", "b.txt", "text/plain", b"second", None)
    assert await files.attachment_bytes("bucket", path) == b"first"


async def test_names_that_the_server_did_not_make_are_refused(files):
    for bucket, path in (("../x", a_path()), ("bucket", "../../etc/passwd"), ("bucket", f"{FOLDER}/x.txt")):
        with pytest.raises(ValueError):
            await files.save_attachment(bucket, path, "ann", "a.txt", "text/plain", b"x", None)
        with pytest.raises(ValueError):
            await files.attachment_bytes(bucket, path)


async def test_a_missing_content_is_file_not_found(files):
    with pytest.raises(FileNotFoundError):
        await files.attachment_bytes("bucket", a_path())


async def test_a_document_is_kept_and_its_content_goes_with_it(open_store, files, tmp_path):
    doc = await files.save_document("ann", "kb", "d.md", "text/markdown", b"# Doc\n\nwords\n", ["words"], 10**6)
    assert await kept(open_store, tmp_path / "data", f"documents/{doc['id']}") == b"# Doc\n\nwords\n"
    assert await files.document_usage("ann") == len(b"# Doc\n\nwords\n")
    await files.delete_document(doc["id"])
    assert await kept(open_store, tmp_path / "data", f"documents/{doc['id']}") is None
    assert await files.document(doc["id"]) is None


async def test_a_document_whose_record_fails_leaves_no_content(open_store, files, tmp_path):
    with pytest.raises(QuotaExceeded):
        await files.save_document("ann", "kb", "big.txt", "text/plain", b"x" * 100, ["x"], 10)
    assert await kept_names(open_store, tmp_path / "data", "documents/") == set()


async def test_a_content_gone_behind_the_servers_back_is_file_not_found(open_store, files, tmp_path):
    path = a_path()
    await files.save_attachment("bucket", path, "ann", "a.txt", "text/plain", b"x", None)
    assert await kept_names(open_store, tmp_path / "data", "attachments/") == {f"attachments/bucket/{path}"}
    await forget(open_store, tmp_path / "data", f"attachments/bucket/{path}")
    with pytest.raises(FileNotFoundError):
        await files.attachment_bytes("bucket", path)
