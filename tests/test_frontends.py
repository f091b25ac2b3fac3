"""The behaviour suite's facade (frontends.py) itself: a sync test that
suspends fails, a front end whose call is of the wrong kind fails, and
the interrupt of every front end reaches a blocked call (trio's included,
whatever netrunner.aio supports)."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
from frontends import FRONTS, make_front, run_to_completion


def test_a_sync_test_that_suspends_fails() -> None:
    async def suspends() -> None:
        await asyncio.sleep(0)

    with pytest.raises(AssertionError, match="suspended"):
        run_to_completion(suspends())


def test_a_call_of_the_wrong_kind_fails() -> None:
    async def coroutine() -> None:
        pass

    def plain() -> None:
        pass

    with pytest.raises(AssertionError, match="plain value"):
        run_to_completion(make_front("sync").call(coroutine))
    with pytest.raises(AssertionError, match="coroutine"):
        asyncio.run(make_front("asyncio").call(plain))


@pytest.mark.parametrize("name", FRONTS)
def test_interrupted_reaches_a_blocked_call_and_fails_a_call_that_returns(name: str) -> None:
    if name == "trio":
        pytest.importorskip("trio")
    front = make_front(name)
    r, w = os.pipe()

    async def blocked() -> None:
        if name == "sync":
            os.read(r, 1)  # nothing is ever written: only the interrupt ends it
        elif name == "asyncio":
            await asyncio.Event().wait()
        else:
            import trio

            await trio.sleep_forever()

    async def returns() -> None:
        pass

    never = threading.Event()

    async def main() -> Any:
        await front.interrupted(blocked, lambda: None)
        with pytest.raises(AssertionError, match="returned before"):
            # The interrupt comes (1 s) after a call that returns at once.
            await front.interrupted(returns, lambda: never.wait(1))

    try:
        if name == "trio":
            import trio

            trio.run(lambda: main())
        elif name == "asyncio":
            asyncio.run(main())
        else:
            run_to_completion(main())
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("name", FRONTS)
def test_in_thread_and_gather_give_results_in_order(name: str) -> None:
    if name == "trio":
        pytest.importorskip("trio")
    front = make_front(name)
    seen: list[str] = []

    async def first() -> str:
        seen.append(threading.current_thread().name)
        return "first"

    async def second() -> int:
        return await front.in_thread(lambda a, b=0: a + b, 40, b=2)

    async def main() -> list[Any]:
        return await front.gather(first, second)

    if name == "trio":
        import trio

        assert trio.run(main) == ["first", 42]
    elif name == "asyncio":
        assert asyncio.run(main()) == ["first", 42]
    else:
        assert run_to_completion(main()) == ["first", 42]
        assert seen[0].startswith("gather-")  # sync branches run in threads
