"""Peers of Panza on the same workload: Python panza 0.2.2 (SQLiteCache) and python-diskcache
(Cache.memoize), as the SQLite-hit benchmarks run it: a memoized function of one integer returning
the same ~1 KiB JSON documents (Workload.json), 10,000 keys, warmed first, then hits in the order
(task * 7919 + (index + 1) * 4099) % 10000 for each task.

    python peers.py panza|diskcache TASKS SECONDS

Prints the hits per second on its last line. TASKS are asyncio tasks for Python panza (an async
library) and threads for diskcache.
"""
import asyncio
import os
import sys
import tempfile
import threading
import time

KEYS = 10_000
VALUE_BYTES = 1024


def workload_json(seed):
    """The same document as Benchmarks/PanzaBenchmarks/Workload.swift."""
    text = '{"id":%d,"model":"panza-bench","choices":[' % seed
    index = 0
    while len(text.encode()) < VALUE_BYTES - 80:
        text += '{"index":%d,"text":"token %d of a cached completion","logprob":-0.%d%d},' % (
            index, seed * 31 + index, index % 10, seed % 7)
        index += 1
    text += '],"usage":{"prompt":%d}' % (seed % 97)
    while len(text.encode()) < VALUE_BYTES - 1:
        text += " "
    return text + "}"


def order(task, index):
    return (task * 7919 + (index + 1) * 4099) % KEYS


def python_panza(tasks, seconds, folder):
    from panza import SQLiteCache

    cache = SQLiteCache(os.path.join(folder, "panza.sqlite"))

    @cache.cache(id="completion")
    async def completion(seed):
        return workload_json(seed)

    async def main():
        for seed in range(KEYS):
            await completion(seed)
        done = [0] * tasks
        deadline = time.perf_counter() + seconds

        async def worker(task):
            index = 0
            while time.perf_counter() < deadline:
                for _ in range(100):
                    await completion(order(task, index))
                    index += 1
                done[task] = index

        start = time.perf_counter()
        await asyncio.gather(*(worker(task) for task in range(tasks)))
        return sum(done) / (time.perf_counter() - start)

    return asyncio.run(main())


def diskcache_memoize(tasks, seconds, folder):
    import diskcache

    cache = diskcache.Cache(os.path.join(folder, "diskcache"))

    @cache.memoize(name="completion")
    def completion(seed):
        return workload_json(seed)

    for seed in range(KEYS):
        completion(seed)
    done = [0] * tasks
    deadline = time.perf_counter() + seconds

    def worker(task):
        index = 0
        while time.perf_counter() < deadline:
            for _ in range(100):
                completion(order(task, index))
                index += 1
            done[task] = index

    threads = [threading.Thread(target=worker, args=(task,)) for task in range(tasks)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - start)


if __name__ == "__main__":
    peer, tasks, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with tempfile.TemporaryDirectory() as folder:
        run = python_panza if peer == "panza" else diskcache_memoize
        print(f"{run(tasks, seconds, folder):.0f}")
