"""Log lines in blocks: stored exactly once whatever the retries, read back
a page at a time, and sealed into several blobs read one at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runyard.core.limits import MAX_LOG_LINE as MAX_LINE
from runyard.core.models import LogBlock, LogPage, Run, RunEnd
from runyard.core.states import RunKind, RunState
from runyard.server.services import logs as logs_module
from runyard.server.services.logs import LogService, decode, encode, lines_after
from runyard.testing import InProcessWorkerApi, MemoryBlobStore
from tests.unit.conftest import World, calls_of
from tests.unit.test_launcher_life import held_run


@dataclass
class StoredBlocks:
    """The two queries LogService.append makes, over a list."""

    current: Run
    blocks: list[LogBlock] = field(default_factory=list)

    def add_log_blocks(self, run_id: str, expect_seq: int, blocks: list[LogBlock]) -> bool:
        if self.current.log_seq != expect_seq:
            return False
        self.blocks += blocks
        self.current = replace(self.current, log_seq=blocks[-1].last)
        return True

    def run(self, run_id: str, with_transitions: bool = True) -> Run:
        return self.current


def a_run() -> Run:
    now = dt.datetime.now(dt.UTC)
    return Run("r1", "s1", "p1", RunKind.TASK, RunState.PERFORMING, "", "w1", 1, False, "", now, now)


def split(lines: list[str], first: int, cuts: list[int]) -> list[LogBlock]:
    """Lines numbered from ``first``, cut into blocks at ``cuts``."""
    edges = [*sorted({c for c in cuts if 0 < c < len(lines)}), len(lines)]
    out, start = [], 0
    for edge in edges:
        out.append(LogBlock(first + start, float(first + start), "\n".join(lines[start:edge])))
        start = edge
    return out


line_text = st.text(st.characters(blacklist_characters="\n"), max_size=12)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(line_text, min_size=1, max_size=40), data=st.data())
def test_every_line_is_stored_once_in_order_whatever_the_batches_and_retries(lines: list[str], data) -> None:
    """A worker resends what it had no answer for, in blocks cut any way,
    overlapping what the server has: each line is stored once, in order."""
    store = StoredBlocks(a_run())
    service = LogService(None)  # type: ignore[arg-type]  # append needs no context
    sent_to = 0
    for _ in range(data.draw(st.integers(1, 8))):
        start = data.draw(st.integers(1, min(store.current.log_seq + 1, len(lines))))
        end = data.draw(st.integers(start, len(lines)))
        cuts = data.draw(st.lists(st.integers(1, max(end - start, 1)), max_size=4))
        # A stale view of the run (another request stored lines since) must not matter either:
        seen = replace(store.current, log_seq=data.draw(st.integers(0, store.current.log_seq)))
        service.append(store, seen, split(lines[start - 1:end], start, cuts))  # type: ignore[arg-type]
        sent_to = max(sent_to, end)
    got = lines_after(store.blocks, 0, 10**6)
    assert [ln.seq for ln in got] == list(range(1, sent_to + 1))
    assert [ln.msg for ln in got] == lines[:sent_to]


def test_a_line_over_the_limit_is_cut_and_the_others_keep_their_numbers() -> None:
    store = StoredBlocks(a_run())
    LogService(None).append(store, store.current, [LogBlock(1, 1.0, "a\n" + "x" * (MAX_LINE + 5) + "\nc")])  # type: ignore[arg-type]
    got = lines_after(store.blocks, 0, 100)
    assert [(ln.seq, len(ln.msg)) for ln in got] == [(1, 1), (2, MAX_LINE), (3, 1)]


# Lone surrogates too (output decoded with surrogateescape); a high and a low
# one side by side are one character in JSON, so they are left out.
any_text = st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=30).filter(
    lambda t: not re.search("[\ud800-\udbff][\udc00-\udfff]", t))


@given(st.lists(st.tuples(st.integers(1, 10**6), st.floats(0, 2e9), any_text), max_size=20))
@example([(1, 0.0, "next\x85line"), (2, 1.0, "line\u2028separator\x0bvertical\x1cfile")])
def test_blocks_survive_their_sealed_encoding(raw: list[tuple[int, float, str]]) -> None:
    """Any text, lone surrogates and newlines included, reads back as written."""
    blocks = [LogBlock(seq, ts, text) for seq, ts, text in raw]
    assert list(decode(encode(blocks).decode())) == blocks


def test_a_page_stops_at_its_line_count_and_its_text_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [LogBlock(1, 1.0, "\n".join(f"line {i}" for i in range(1, 101)))]
    assert [ln.seq for ln in lines_after(blocks, 40, 5)] == [41, 42, 43, 44, 45]
    monkeypatch.setattr(logs_module, "PAGE_TEXT", 20)
    assert [ln.msg for ln in lines_after(blocks, 0, 100)] == ["line 1", "line 2", "line 3", "line 4"]


def test_a_sealed_log_lies_in_several_blobs_and_a_page_reads_only_the_one_it_needs(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs_module, "SEAL_CHUNK", 2_000)
    api, run_id, lease = held_run(world)
    for first in range(1, 1001, 100):
        text = "\n".join(f"line {i:04d} " + "." * 20 for i in range(first, first + 100))
        api.send_logs(run_id, lease, [LogBlock(first, float(first), text)])
    world.svc.runs.report(world.svc.auth.check_worker_token(api.credential), run_id, lease, RunState.PREPARING)
    world.svc.runs.report(world.svc.auth.check_worker_token(api.credential), run_id, lease, RunState.FAILED, "x")
    assert world.svc.runs.after_ends() == [run_id]
    keys = sorted(world.blobs.keys(f"logs/{run_id}/"))
    assert len(keys) == 10  # each 100-line block is over the chunk size: a blob each

    reads = calls_of(monkeypatch, MemoryBlobStore, "get")
    page = world.svc.logs.page(run_id, after=450, limit=20)
    assert [ln.seq for ln in page.lines] == list(range(451, 471))
    assert [key for _, key in reads] == [f"logs/{run_id}/0000000401.jsonl"]
    everything = [ln.seq for ln in world.svc.logs.page(run_id, after=0, limit=5000).lines]
    assert everything == list(range(1, 1001))


def test_a_batch_is_refused_past_its_line_count_or_the_line_numbers_a_column_holds() -> None:
    from pydantic import ValidationError

    from runyard.core import limits
    from runyard.wire import LogsIn

    many = "\n" * limits.MAX_LOG_BATCH_LINES  # one block, one line more than a batch may hold
    with pytest.raises(ValidationError, match="at most 5000 log lines"):
        LogsIn.model_validate({"lease": 1, "blocks": [{"seq": 1, "ts": 0.0, "text": many}]})
    with pytest.raises(ValidationError, match="less than or equal"):
        LogsIn.model_validate({"lease": 1, "blocks": [{"seq": 2**31 - 1, "ts": 0.0, "text": "x"}]})
    fits = LogsIn.model_validate({"lease": 1, "blocks": [{"seq": 1, "ts": 0.0, "text": many[1:]}]})
    assert fits.to_domain()[0].line_count == limits.MAX_LOG_BATCH_LINES


def test_the_runs_that_ended_since_the_last_pass_are_sealed_in_one_transaction(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    api, first, lease = held_run(world)
    ended = []
    for number in range(3):
        run_id, lease = (first, lease) if number == 0 else claim_task(world, api)
        api.send_logs(run_id, lease, [LogBlock(1, 1.0, f"run {number}\nbye")])
        worker = world.svc.auth.check_worker_token(api.credential)
        world.svc.runs.report(worker, run_id, lease, RunState.PREPARING)
        world.svc.runs.report(worker, run_id, lease, RunState.FAILED, "x")
        ended.append(run_id)
    writes = calls_of(monkeypatch, type(world.svc.ctx), "tx")
    assert world.svc.runs.after_ends() == sorted(ended)
    assert len(writes) == 1
    for number, run_id in enumerate(ended):
        assert [ln.msg for ln in world.svc.logs.page(run_id, after=0, limit=10).lines] == [f"run {number}", "bye"]
        assert list(world.blobs.keys(f"logs/{run_id}/"))  # read back from the sealed blob


def claim_task(world: World, api: InProcessWorkerApi) -> tuple[str, int]:
    run_id = world.trigger(kind=RunKind.TASK, command="work")
    answer = api.poll(0)
    assert answer.assignment is not None and answer.assignment.run.id == run_id
    return run_id, answer.assignment.lease


def test_a_page_at_the_end_of_the_log_reads_no_log_rows_and_the_next_line_still_arrives(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from runyard.server.db.repository import Repository

    api, run_id, lease = held_run(world)
    api.send_logs(run_id, lease, [LogBlock(1, 1.0, "one\ntwo")])
    rows = calls_of(monkeypatch, Repository, "log_blocks")
    seals = calls_of(monkeypatch, Repository, "log_seal")
    page = world.svc.logs.page(run_id, after=2)
    assert page.lines == () and not page.done
    assert rows == [] and seals == []  # a follower waiting at the end: the run's row only

    api.send_logs(run_id, lease, [LogBlock(3, 3.0, "three")])
    assert [ln.msg for ln in world.svc.logs.page(run_id, after=2).lines] == ["three"]
    worker = world.svc.auth.check_worker_token(api.credential)
    world.svc.runs.report(worker, run_id, lease, RunState.PREPARING)
    world.svc.runs.report(worker, run_id, lease, RunState.FAILED, "x")
    world.svc.runs.after_ends()
    assert world.svc.logs.page(run_id, after=3).done
    assert [ln.msg for ln in world.svc.logs.page(run_id, after=1).lines] == ["two", "three"]


def test_a_run_ends_without_the_object_store_and_the_after_ends_pass_does_its_part(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's end report is a short call (on SQLite it may run on the event
    loop): the workspace and the log reach the object store on the next pass."""
    api, run_id, lease = held_run(world)
    api.put_workspace(run_id, lease, b"sealed workspace")
    api.send_logs(run_id, lease, [LogBlock(1, 1.0, "working")])
    deletes = calls_of(monkeypatch, MemoryBlobStore, "delete")
    puts = calls_of(monkeypatch, MemoryBlobStore, "put")
    api.report(run_id, lease, RunState.PERFORMING, via=[RunState.PREPARING])
    api.send_logs(run_id, lease, [], RunEnd(RunState.FINISHED))
    assert deletes == [] and puts == []
    assert world.blobs.exists(f"workspaces/{run_id}.sealed")

    assert world.svc.runs.after_ends() == [run_id]
    assert not world.blobs.exists(f"workspaces/{run_id}.sealed")
    assert [ln.msg for ln in world.svc.logs.page(run_id).lines] == ["working"]  # from its sealed blob
    assert world.svc.runs.after_ends() == []  # each run once


def test_a_follower_reads_a_sealed_log_off_the_event_loop(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    api, run_id, lease = held_run(world)
    api.report(run_id, lease, RunState.PERFORMING, via=[RunState.PREPARING])
    api.send_logs(run_id, lease, [LogBlock(1, 1.0, "one\ntwo")], RunEnd(RunState.FINISHED))
    world.svc.runs.after_ends()
    readers: list[int] = []
    real_get = MemoryBlobStore.get

    def get(self: MemoryBlobStore, key: str) -> bytes:
        readers.append(threading.get_ident())
        return real_get(self, key)

    monkeypatch.setattr(MemoryBlobStore, "get", get)

    async def follow() -> tuple[int, LogPage]:
        return threading.get_ident(), await world.svc.logs.follow(run_id, 0, 0)

    loop_thread, page = asyncio.run(follow())
    assert [ln.msg for ln in page.lines] == ["one", "two"]
    assert readers and loop_thread not in readers
