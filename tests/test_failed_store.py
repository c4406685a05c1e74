"""The failed-request store on disk: private, atomic, uniquely named, bounded."""

from __future__ import annotations

import datetime as dt
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

import tokstream
from tokstream import Error, FailedRequest, FailedRequestStore, InvalidRequest
from tokstream._failed import FailureRecorder
from tokstream._failed._store import default_directory

REQUEST = tokstream.CompletionRequest(prompt=[151644, 872, 198], max_tokens=8, temperature=0.0)


def record(i: int = 0, *, tokens: int = 3, when: dt.datetime | None = None) -> FailedRequest:
    event = Error(
        tokstream.StallTimeout(f"stall number {i}"),
        np.arange(tokens, dtype=np.int32),
        "x" * tokens,
    )
    return FailedRequest.from_error(
        event,
        body=REQUEST.encode("tiny-qwen"),
        url="http://127.0.0.1:8000/v1/completions",
        model="tiny-qwen",
        request_id=f"req-{i}",
        failed_at=when,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_directory_0700_and_files_0600_whatever_the_umask(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "failed"
    old = os.umask(0)
    try:
        path = FailedRequestStore(directory).save(record())
    finally:
        os.umask(old)
    assert mode(directory) == 0o700
    assert mode(path) == 0o600
    assert path.parent == directory and path.name.endswith(".json")


def test_an_existing_open_directory_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "failed"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    FailedRequestStore(directory).save(record())
    assert mode(directory) == 0o700


def test_a_saved_record_reads_back_equal(tmp_path: Path) -> None:
    saved = record(7, tokens=5)
    path = FailedRequestStore(tmp_path).save(saved)
    loaded = FailedRequest.load(path)
    assert loaded.body == saved.body == REQUEST.encode("tiny-qwen")
    assert loaded.error == saved.error and loaded.attempts == saved.attempts
    assert loaded.token_ids.tolist() == [0, 1, 2, 3, 4] and loaded.text == "xxxxx"
    assert loaded.failed_at == saved.failed_at and loaded.request_id == "req-7"
    assert "StallTimeout" in path.name


def test_names_are_unique_for_thousands_of_failures_in_one_second(tmp_path: Path) -> None:
    """Every failure has the same timestamp here: only the names' counter tells them apart."""
    store = FailedRequestStore(tmp_path, max_files=100_000)
    when = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    paths: list[Path] = []

    def burst(n: int) -> None:
        paths.extend(store.save(record(i, when=when)) for i in range(n))

    threads = [threading.Thread(target=burst, args=(1000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    burst(1000)
    assert len(paths) == 5000
    assert len(set(paths)) == 5000
    assert len(listing(tmp_path)) == 5000  # nothing overwritten, no temporary file left
    assert all(p.name.startswith("20300102T030405.678901Z-StallTimeout-") for p in paths)
    assert sorted(FailedRequest.load(p).request_id for p in paths[-1000:]) == sorted(
        f"req-{i}" for i in range(1000)
    )


def test_a_name_taken_by_another_writer_is_never_overwritten(tmp_path: Path) -> None:
    """Another host sharing the directory may pick the same name: the link refuses it."""
    store = FailedRequestStore(tmp_path)
    first = store.save(record(1))
    # Plant files under the names the next saves would take (same time, pid, next numbers).
    when = FailedRequest.load(first).failed_at
    stamp, kind, pid, seq = first.stem.split("-")
    planted = [tmp_path / f"{stamp}-{kind}-{pid}-{int(seq) + k}.json" for k in range(1, 40)]
    for p in planted:
        p.write_text("someone else's")
    second = store.save(record(2, when=when))
    assert second not in (first, *planted)
    assert all(p.read_text() == "someone else's" for p in planted)
    assert FailedRequest.load(second).request_id == "req-2"


def test_retention_by_count_removes_the_oldest_first(tmp_path: Path) -> None:
    store = FailedRequestStore(tmp_path, max_files=10)
    paths = [
        store.save(record(i, when=dt.datetime(2030, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i)))
        for i in range(35)
    ]
    kept = listing(tmp_path)
    assert 1 <= len(kept) <= 10
    assert kept == sorted(p.name for p in paths[-len(kept) :])  # the newest ones
    assert paths[-1].exists()


def test_retention_by_bytes_removes_the_oldest_first(tmp_path: Path) -> None:
    size = len(record(0).to_json())
    store = FailedRequestStore(tmp_path, max_bytes=5 * size + size // 2)
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    paths = [store.save(record(i, when=start + dt.timedelta(seconds=i))) for i in range(20)]
    kept = listing(tmp_path)
    assert sum(os.path.getsize(tmp_path / name) for name in kept) <= store.max_bytes
    assert 1 <= len(kept) <= 5
    assert kept == sorted(p.name for p in paths[-len(kept) :])


def test_retention_counts_records_other_writers_left(tmp_path: Path) -> None:
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    older = FailedRequestStore(tmp_path, max_files=1000)
    for i in range(12):
        older.save(record(i, when=start + dt.timedelta(seconds=i)))
    (tmp_path / "notes.txt").write_text("not a record: never touched")
    newest = FailedRequestStore(tmp_path, max_files=10).save(
        record(99, when=start + dt.timedelta(hours=1))
    )
    records = [name for name in listing(tmp_path) if name.endswith(".json")]
    assert len(records) <= 10 and newest.name in records
    assert (tmp_path / "notes.txt").read_text() == "not a record: never touched"


def test_the_newest_record_is_kept_even_when_it_alone_is_over_the_bytes(tmp_path: Path) -> None:
    store = FailedRequestStore(tmp_path, max_bytes=10)
    store.save(record(1))
    last = store.save(record(2))
    assert listing(tmp_path) == [last.name]


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FailedRequestStore(tmp_path)
    store.save(record(1))
    before = listing(tmp_path)
    real_write = os.write

    def disk_full(fd: int, data: object) -> int:
        real_write(fd, bytes(memoryview(data)[:10]))  # type: ignore[arg-type]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.save(record(2))
    monkeypatch.undo()
    assert listing(tmp_path) == before  # no partial record, no temporary file
    assert all(FailedRequest.load(tmp_path / name) for name in before)


def test_a_removed_directory_is_made_again(tmp_path: Path) -> None:
    directory = tmp_path / "failed"
    store = FailedRequestStore(directory)
    store.save(record(1))
    for name in os.listdir(directory):
        os.unlink(directory / name)
    os.rmdir(directory)
    path = store.save(record(2))
    assert path.exists() and mode(directory) == 0o700


def test_stale_temporary_files_are_cleaned(tmp_path: Path) -> None:
    stale = tmp_path / ".1234-1.tmp"
    fresh = tmp_path / ".1234-2.tmp"
    stale.write_text("left by a crash")
    fresh.write_text("being written right now")
    os.utime(stale, (0, 0))
    FailedRequestStore(tmp_path).save(record())
    assert not stale.exists() and fresh.exists()


def test_paths_are_newest_first(tmp_path: Path) -> None:
    store = FailedRequestStore(tmp_path)
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    saved = [store.save(record(i, when=start + dt.timedelta(minutes=i))) for i in (2, 0, 1)]
    assert store.paths() == [saved[0], saved[2], saved[1]]
    assert FailedRequestStore(tmp_path / "missing").paths() == []


def test_default_location_follows_xdg_and_the_environment(tmp_path: Path) -> None:
    home = Path.home()
    assert default_directory({}) == home / ".local" / "state" / "tokstream" / "failed"
    assert default_directory({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "tokstream" / "failed"
    # A relative XDG_STATE_HOME is invalid per the spec, and ignored.
    assert default_directory({"XDG_STATE_HOME": "rel"}) == home / ".local/state/tokstream/failed"
    env = {"XDG_STATE_HOME": str(tmp_path), "TOKSTREAM_FAILED_DIR": str(tmp_path / "mine")}
    assert default_directory(env) == tmp_path / "mine"
    for off in ("off", "OFF", "0", "false", "none"):
        assert default_directory({"TOKSTREAM_FAILED_DIR": off}) is None
    assert default_directory({"TOKSTREAM_FAILED_DIR": ""}) == home / ".local/state/tokstream/failed"


def test_tests_never_save_to_the_real_home(failed_requests_dir: Path) -> None:
    store = FailedRequestStore.from_environment()
    assert store is not None and store.directory == failed_requests_dir
    assert not str(store.directory).startswith(str(Path.home() / ".local"))


def test_client_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/v1"
    assert tokstream.Client(url, model="m", failed_requests=False).failed_requests is None
    store = FailedRequestStore(tmp_path, max_files=3)
    assert tokstream.Client(url, model="m", failed_requests=store).failed_requests is store
    by_path = tokstream.Client(url, model="m", failed_requests=tmp_path).failed_requests
    assert by_path is not None and by_path.directory == tmp_path
    monkeypatch.setenv("TOKSTREAM_FAILED_DIR", "off")
    assert tokstream.Client(url, model="m").failed_requests is None
    monkeypatch.setenv("TOKSTREAM_FAILED_DIR", str(tmp_path / "env"))
    a = tokstream.Client(url, model="m").failed_requests
    b = tokstream.Client(url, model="m").failed_requests
    assert a is b and a is not None and a.directory == tmp_path / "env"  # one shared tally
    lazy = tokstream.Client(url, model="m", failed_requests=tmp_path / "lazy")
    assert lazy.failed_requests is not None and not (tmp_path / "lazy").exists()  # no disk I/O
    with pytest.raises(InvalidRequest, match="failed_requests"):
        tokstream.Client(url, model="m", failed_requests=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="max_files"):
        FailedRequestStore(tmp_path, max_files=0)
    assert FailedRequestStore.from_environment() is a


def test_a_failure_to_save_never_hides_the_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    recorder = FailureRecorder(FailedRequestStore(blocker / "failed"), ["sk-SECRET"])
    exc = tokstream.RemoteDisconnected("the connection broke")
    event = Error(exc, np.array([5, 6], np.int32), "ab")
    out = recorder.record(
        event, request=REQUEST, model="m", url="http://127.0.0.1:9/v1/completions", request_id=None
    )
    assert out.error is exc and out.token_ids.tolist() == [5, 6] and out.text == "ab"
    assert out.saved_to is None and exc.saved_to is None
    assert out.save_error is not None and "could not save the failed request" in out.save_error
    assert str(blocker) in out.save_error
    assert any("could not save" in note for note in exc.__notes__)
