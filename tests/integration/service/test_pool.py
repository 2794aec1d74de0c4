"""The fingerprint pool: real worker processes, jobs over their sockets, deaths survived."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import operator
import os
import pickle
import time

import pytest

from shotstamp_service.http.errors import STATUS
from shotstamp_service.matching import pool as pool_module
from shotstamp_service.matching.decode import Rejection
from shotstamp_service.matching.engine import verify_many
from shotstamp_service.matching.fingerprint import DecodeLimits, ImageRejected, fingerprint
from shotstamp_service.matching.pool import FingerprintPool
from shotstamp_service.matching.thumbnail import fingerprint_and_thumbnail
from tests.kit import imagegen
from tests.kit.imagegen import jpeg


@pytest.fixture
async def pool():
    pool = FingerprintPool(2, DecodeLimits(), thumbnail_size=64)
    await pool.start()
    yield pool
    pool.close()


async def test_fingerprints_match_the_in_process_function(pool):
    images = [jpeg(seed) for seed in range(6)]
    got = await asyncio.gather(*(pool(data) for data in images))
    assert got == [fingerprint(data) for data in images]
    fp, thumb = await pool.analyse(images[0])
    assert fp == got[0]
    assert thumb is not None and thumb[:2] == b"\xff\xd8"


async def test_jobs_and_replies_of_every_size_cross_whole(pool):
    """Jobs larger than a socket takes in one send and replies larger than the first read
    (and smaller than the header's own read) come back byte for byte, in order."""
    data = os.urandom(3 << 20)
    sizes = [0, 1, 7, 8, 9, (1 << 16) - 9, 1 << 16, (1 << 16) + 1, 300_000, len(data)]
    # Up, then down again: a worker's kept buffer, a larger job's own, then the kept one.
    for size in [*sizes, *reversed(sizes)]:
        got = await pool._run(functools.partial(operator.getitem, data, slice(0, size)))
        assert got == data[:size]
    together = await asyncio.gather(
        *(pool._run(functools.partial(operator.getitem, data, slice(s, s + 99_999)))
          for s in range(0, 1 << 20, 1 << 17))
    )
    assert together == [data[s:s + 99_999] for s in range(0, 1 << 20, 1 << 17)]


async def test_a_rejected_image_is_the_worker_s_exception_not_a_dead_worker(pool):
    before = pool.worker_pids()
    with pytest.raises(ImageRejected) as caught:
        await pool(b"not an image at all")
    assert STATUS[caught.value.reason] == 415
    with pytest.raises(ValueError):
        await pool._run(functools.partial(int, "x"))
    assert pool.worker_pids() == before


async def test_a_dead_worker_fails_its_job_with_422_and_is_replaced(pool):
    before = pool.worker_pids()
    with pytest.raises(ImageRejected) as caught:
        await pool._run(functools.partial(os._exit, 3))
    assert caught.value.reason is Rejection.NOT_PROCESSED and STATUS[caught.value.reason] == 422
    after = await _two_workers(pool)
    assert after != before
    # Both the survivor and the replacement work.
    images = [jpeg(seed) for seed in range(10, 14)]
    assert await asyncio.gather(*(pool(d) for d in images)) == [fingerprint(d) for d in images]


async def _two_workers(pool: FingerprintPool) -> set[int]:
    """The pool's workers once a replacement (started in the background) has joined."""
    for _ in range(200):
        if len(pool.worker_pids()) == 2 and pool._idle is not None and pool._idle.qsize() == 2:
            return pool.worker_pids()
        await asyncio.sleep(0.05)
    raise AssertionError(f"no replacement worker: {pool.worker_pids()}")


async def test_a_replacement_that_cannot_start_is_retried(pool, monkeypatch):
    """A forkserver that cannot fork for a moment must not shrink the pool for good."""
    spawn, failures = pool._spawn, []

    async def flaky_spawn():
        if len(failures) < 2:
            failures.append(1)
            raise OSError("cannot fork now")
        return await spawn()

    monkeypatch.setattr(pool, "_spawn", flaky_spawn)
    with pytest.raises(ImageRejected):
        await pool._run(functools.partial(os._exit, 3))
    await _two_workers(pool)
    assert len(failures) == 2
    data = jpeg(7)
    assert await asyncio.gather(pool(data), pool(data)) == [fingerprint(data)] * 2


async def test_a_cancelled_upload_leaves_the_pool_whole(pool):
    before = pool.worker_pids()
    tasks = [asyncio.ensure_future(pool(jpeg(seed, size=(1600, 1200)))) for seed in range(4)]
    await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    data = jpeg(42)
    assert await pool(data) == fingerprint(data)
    assert pool.worker_pids() == before


async def test_a_pool_used_without_start_starts_once():
    pool = FingerprintPool(2, DecodeLimits())
    try:
        images = [jpeg(seed) for seed in range(20, 26)]
        got = await asyncio.gather(*(pool(d) for d in images))
        assert got == [fingerprint(d) for d in images]
        assert len(pool.worker_pids()) == 2
    finally:
        pool.close()


async def test_workers_leave_when_the_pool_closes():
    pool = FingerprintPool(2, DecodeLimits())
    await pool.start()
    processes = [w.process for w in pool._all]
    pool.close()
    assert all(not p.is_alive() for p in processes)
    assert all(p.exitcode == 0 for p in processes)


async def test_out_of_band_buffers_cross_whole(pool):
    """A job's `pickle.PickleBuffer`s travel beside its pickle (sent from where they are, read
    in place as read-only views): of every size, also past what one send takes, in order."""
    data = os.urandom(5 << 20)
    cuts = [0, 0, 1, 8, 9, 1 << 16, 300_000, 3 << 20, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    job = functools.partial(_described, [pickle.PickleBuffer(c) for c in chunks])
    assert await pool._run(job) == [(True, len(c), c[:16]) for c in chunks]
    assert await pool._run(functools.partial(bytes.join, b"", [pickle.PickleBuffer(c)
                                                               for c in chunks])) == data


def _described(views: list[memoryview]) -> list[tuple[bool, int, bytes]]:
    return [(isinstance(v, memoryview) and v.readonly, len(v), bytes(v[:16])) for v in views]


@pytest.fixture(params=[2, 0], ids=["workers", "no workers"])
async def any_pool(request):
    pool = FingerprintPool(request.param, DecodeLimits())
    await pool.start()
    yield pool
    pool.close()


async def test_stage_two_through_the_pool_is_stage_two_in_process(any_pool):
    """The worker reads the candidates' blobs as views of what it received, not bytes: every
    candidate's evidence (geometry included) and the shortlist's choice are the same (and
    without workers, where the blobs are not wrapped at all)."""
    pool = any_pool
    photos = [imagegen.detailed_photo(seed) for seed in range(12)]
    stored = [fingerprint(imagegen.encode(p)).to_store()[1] for p in photos]
    w, h = photos[0].size
    crop = fingerprint(imagegen.encode(photos[0].crop((w // 10, h // 10, w, h))))
    assert crop.features is not None and all(stored)
    # a global-pair candidate, and more word candidates than the shortlist keeps
    items = [(0, stored[0], ("pdq", "pdq"), False),
             *((ref, blob, None, True) for ref, blob in enumerate(stored))]
    got = await pool.verify(crop.features, items)
    want = verify_many(crop.features, items)
    assert [r for r, _ in got] == [r for r, _ in want] and len(want) < len(items)
    assert [dataclasses.astuple(e) for _, e in got] == [dataclasses.astuple(e) for _, e in want]
    assert max(e.inliers for _, e in got) > 20


async def test_an_upload_travels_beside_the_job_s_pickle(pool, monkeypatch):
    """`analyse` and `__call__` send the upload out of band (from the caller's bytes, not a
    copy in the pickle), and the worker's answer is the in-process one."""
    sent: list[list[memoryview | bytes]] = []
    dump = pool_module._dump_job

    def spy(job):
        parts = dump(job)
        sent.append(parts)
        return parts

    monkeypatch.setattr(pool_module, "_dump_job", spy)
    data = jpeg(21)
    assert await pool.analyse(data) == fingerprint_and_thumbnail(data, DecodeLimits(), 64)
    assert await pool(data) == fingerprint(data)
    for parts in sent:
        _, pickled, upload = parts
        assert len(pickled) < 1024 and bytes(upload) == data


async def test_each_job_gets_its_cpu_seconds_as_the_worker_s_total_grows():
    """The CPU limit moves with what the worker has used: four jobs of 0.6 s each, 2.4 s in
    all, on one worker with a 1 s limit per job, all answer; a job of 3 s does not."""
    pool = FingerprintPool(1, DecodeLimits(), cpu_seconds=1)
    await pool.start()
    try:
        (before,) = pool.worker_pids()
        for _ in range(4):
            assert await pool._run(functools.partial(_burn, 0.6)) >= 0.6
        assert pool.worker_pids() == {before}
        with pytest.raises(ImageRejected) as caught:
            await pool._run(functools.partial(_burn, 3.0))
        assert caught.value.code == "image_too_costly"
    finally:
        pool.close()


def _burn(seconds: float) -> float:
    """Spin on the CPU for `seconds` of this process's CPU time; the time spun."""
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass
    return time.process_time() - started
