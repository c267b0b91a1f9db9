#!/usr/bin/env python3
"""A TCP proxy that makes a local server look distant: every byte arrives a fixed delay after it
was sent (half the round trip each way), and each connection carries at most a given rate in
each direction (as one TCP flow to a cloud store does, its window over the round trip). Used by
s3.sh --rtt-ms/--link-mib to time restores from a store that is not on the same machine, where
this machine's kernel offers no netem.

Usage: slow_link.py LISTEN_PORT TARGET_PORT --rtt-ms N [--link-mib N]
"""
import argparse
import asyncio
import time

CHUNK = 64 << 10


async def pipe(reader, writer, delay, rate):
    queue = asyncio.Queue()

    async def receive():
        while True:
            data = await reader.read(CHUNK)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    async def send():
        free_at = 0.0  # when the paced link can send the next byte
        while True:
            due, data = await queue.get()
            now = time.monotonic()
            start = max(due, free_at)
            if start > now:
                await asyncio.sleep(start - now)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            free_at = max(start, time.monotonic()) + (len(data) / rate if rate else 0.0)

    try:
        await asyncio.gather(receive(), send())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("listen", type=int)
    ap.add_argument("target", type=int)
    ap.add_argument("--rtt-ms", type=float, required=True)
    ap.add_argument("--link-mib", type=float, default=0.0, help="MiB/s per connection and direction")
    a = ap.parse_args()
    delay = a.rtt_ms / 2000.0
    rate = a.link_mib * (1 << 20)

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", a.target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            pipe(client_r, server_w, delay, rate), pipe(server_r, client_w, delay, rate)
        )

    server = await asyncio.start_server(handle, "127.0.0.1", a.listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
