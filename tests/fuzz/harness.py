"""The fuzz driver: deterministic mutation of seed inputs, a forked worker per target.

The worker runs inputs ``start..count`` of a deterministic stream (so input N
can be rebuilt from its index); before each input it writes the index to a
pipe.  If it dies by a signal, the parent records that input as a crash and
restarts a worker after it.  Exceptions outside the target's expected ones,
and inputs slower than ``SLOW_SECONDS`` per started MiB, are failures.  A
target with a ``memory_limit`` runs with its address space capped at that
much above the worker's own (RLIMIT_AS), so an allocation a header field
sizes fails as MemoryError, a failure, where it would pass on a big machine.
Each failing input is saved under build/fuzz/<target>/ for replay.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import random
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from xenevt.errors import XenevtError

SLOW_SECONDS = 2.0  # per started MiB of input: far above any linear reader here, far below a blow-up
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build", "fuzz")


@dataclass
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: list[bytes]
    expected: tuple[type[BaseException], ...] = (XenevtError,)
    tokens: list[bytes] = field(default_factory=list)  # format words worth splicing in (field names, keywords)
    memory_limit: int | None = None  # bytes of address space the reader may add to the worker's (RLIMIT_AS)


TARGETS: dict[str, Target] = {}


def target(name: str, seeds: list[bytes], expected: tuple[type[BaseException], ...] = (XenevtError,),
           tokens: list[bytes] | None = None, memory_limit: int | None = None):
    """Register ``run`` as the fuzz target ``name``."""

    def wrap(run: Callable[[bytes], None]):
        TARGETS[name] = Target(name, run, list(seeds), expected, list(tokens or []), memory_limit)
        return run

    return wrap


def load_all() -> dict[str, Target]:
    from . import __path__ as here

    for mod in pkgutil.iter_modules(here):
        if mod.name.startswith("t_"):
            importlib.import_module(f"{__package__}.{mod.name}")
    return TARGETS


_INTERESTING = [b"0", b"-1", b"4294967295", b"4294967296", b"99999999999999999999", b"\xc2\xb9", b"\xb9",
                b"\x00", b"\xff", b"9" * 5000, b" " * 4096, b"\n" * 64, b"{", b"[" * 2000, b"\xe2\x80\x8b", b"-",
                b"0-4294967295", b"nan", b"1e999"]
_INTS = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 1 << 17, 4096, 1023]


def mutate(rng: random.Random, t: Target) -> bytes:
    """One input: a seed (or two spliced) under 1-8 random edits of the kinds that break readers."""
    data = bytearray(rng.choice(t.seeds))
    if len(t.seeds) > 1 and rng.random() < 0.1:
        other = rng.choice(t.seeds)
        cut = rng.randrange(len(data) + 1)
        data = data[:cut] + other[rng.randrange(len(other) + 1):]
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(10)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # a random byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2 and len(data) >= 4:  # an interesting 32-bit integer, little-endian
            i = rng.randrange(len(data) - 3)
            data[i:i + 4] = struct.pack("<I", rng.choice(_INTS))
        elif op == 3 and len(data) >= 2:  # an interesting 16-bit integer
            i = rng.randrange(len(data) - 1)
            data[i:i + 2] = struct.pack("<H", rng.choice(_INTS) & 0xFFFF)
        elif op == 4:  # insert an interesting text
            data[pos:pos] = rng.choice(_INTERESTING + t.tokens) if t.tokens or _INTERESTING else b""
        elif op == 5 and data:  # delete a run
            del data[pos:pos + rng.randint(1, 64)]
        elif op == 6 and data:  # duplicate a run
            i = rng.randrange(len(data))
            data[pos:pos] = data[i:i + rng.randint(1, 256)]
        elif op == 7:  # truncate
            del data[pos:]
        elif op == 8 and data:  # replace a digit run with another number
            i = rng.randrange(len(data))
            j = i
            while j < len(data) and 0x30 <= data[j] <= 0x39:
                j += 1
            data[i:j] = str(rng.choice(_INTS + [rng.randrange(1 << 20)])).encode()
        elif op == 9 and t.tokens:
            data[pos:pos] = rng.choice(t.tokens)
    return bytes(data)


def input_for(t: Target, seed: int, index: int) -> bytes:
    """Input ``index`` of the stream ``seed``: the first inputs are the seeds themselves."""
    if index < len(t.seeds):
        return t.seeds[index]
    return mutate(random.Random(f"{t.name}:{seed}:{index}"), t)


@dataclass
class Result:
    name: str
    inputs: int = 0
    rejected: int = 0  # the reader's own error: one line, as promised
    accepted: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"fuzz {self.name}: {self.inputs} inputs, {self.accepted} accepted, {self.rejected} rejected with "
                f"the reader's error, {len(self.failures)} failure(s); slowest {self.slowest * 1000:.1f} ms, "
                f"{self.seconds:.1f} s")


def _save(t: Target, index: int, data: bytes) -> str:
    os.makedirs(os.path.join(OUT, t.name), exist_ok=True)
    path = os.path.join(OUT, t.name, f"input-{index}")
    with open(path, "wb") as f:
        f.write(data)
    return path


def limit_address_space(extra: int) -> None:
    """Cap this process's address space at ``extra`` bytes above what it maps now (RLIMIT_AS)."""
    import resource

    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _worker(t: Target, seed: int, start: int, count: int, wfd: int) -> None:
    """Child: run inputs start..count-1, reporting each index, then each failure, on the pipe."""
    w = os.fdopen(wfd, "w", buffering=1)
    if t.memory_limit is not None:
        limit_address_space(t.memory_limit)
    for index in range(start, count):
        data = input_for(t, seed, index)
        w.write(f"I {index}\n")
        t0 = time.perf_counter()
        try:
            t.run(data)
            outcome = "A"
        except t.expected as e:
            text = str(e)
            outcome = "R"
            if "\n" in text.strip() or not text.strip():
                outcome = f"F error text is not one line: {text[:200]!r}"
        except RecursionError:
            outcome = "F RecursionError"
        except Exception as e:  # noqa: BLE001 - that is what we hunt
            tb = traceback.extract_tb(e.__traceback__)[-1]
            outcome = f"F {type(e).__name__}: {str(e)[:200]} at {os.path.basename(tb.filename)}:{tb.lineno}"
        took = time.perf_counter() - t0
        limit = SLOW_SECONDS * (1 + len(data) // (1 << 20))
        if outcome[0] != "F" and took > limit:
            outcome = f"F slow: {took:.2f} s for {len(data)} bytes"
        w.write(f"{outcome[0]} {took:.6f} {outcome[2:] if outcome[0] == 'F' else ''}\n")
    w.close()
    os._exit(0)


def fuzz(t: Target, count: int, seed: int = 0) -> Result:
    res = Result(t.name)
    t0 = time.perf_counter()
    start = 0
    while start < count:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                _worker(t, seed, start, count, w)
            finally:
                os._exit(70)
        os.close(w)
        current = None
        with os.fdopen(r) as lines:
            for line in lines:
                kind, _, rest = line.rstrip("\n").partition(" ")
                if kind == "I":
                    current = int(rest)
                    continue
                took, _, why = rest.partition(" ")
                res.inputs += 1
                res.slowest = max(res.slowest, float(took))
                if kind == "A":
                    res.accepted += 1
                elif kind == "R":
                    res.rejected += 1
                else:
                    path = _save(t, current, input_for(t, seed, current))
                    res.failures.append(f"input {current} ({path}): {why}")
                current = None
        _, status = os.waitpid(pid, 0)
        if current is not None:  # died on this input
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            path = _save(t, current, input_for(t, seed, current))
            what = f"killed by {signal.Signals(sig).name}" if sig else f"worker exited {os.WEXITSTATUS(status)}"
            res.inputs += 1
            res.failures.append(f"input {current} ({path}): crash, {what}")
            start = current + 1
        else:
            start = count
    res.seconds = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description="Run the readers' fuzz targets.")
    p.add_argument("--target", "-t", action="append", help="only this target (repeatable)")
    p.add_argument("--count", "-n", type=int, default=100_000, help="inputs per target (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    targets = load_all()
    if a.list:
        print("\n".join(sorted(targets)))
        return 0
    names = a.target or sorted(targets)
    unknown = [n for n in names if n not in targets]
    if unknown:
        print(f"fuzz: unknown target(s) {', '.join(unknown)}; known: {', '.join(sorted(targets))}", file=sys.stderr)
        return 2
    bad = 0
    for n in names:
        res = fuzz(targets[n], a.count, a.seed)
        print(res.line(), flush=True)
        for f in res.failures[:20]:
            print(f"  {f}")
        bad += len(res.failures)
    return 1 if bad else 0
