async def f():
    async with x as y:
        await y
