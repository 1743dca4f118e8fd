"""How many messages one PUSH -> PULL hop holds before its sender is refused, by message size.

``python -m bench.queue_depth``: a PUSH connected to a PULL that reads nothing, both high-water
marks ``--hwm``; the sender sends until its socket has had no room for 0.5 s (libzmq's I/O
threads have moved on all they could). A queue's bound counts messages, but the kernel's
socket buffer and libzmq's encoder and decoder batches hold more, and how many more depends
on the size of the messages: what a stop behind a slow reader must drain (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import tempfile

import zmq

SIZES = (3, 50, 1000, 16 * 1024)
HEADER = b"h" * 15  # about a Flujo header frame


def depth(size: int, hwm: int, transport: str, buffer: int = 0) -> int:
    """Messages of ``size`` body bytes the hop took before refusing one; ``buffer``: SO_SNDBUF and
    SO_RCVBUF (0: the system's)."""
    context = zmq.Context()
    try:
        pull = context.socket(zmq.PULL)
        pull.rcvhwm = hwm
        push = context.socket(zmq.PUSH)
        push.sndhwm = hwm
        if buffer:
            pull.rcvbuf, push.sndbuf = buffer, buffer
        with tempfile.TemporaryDirectory() as folder:
            pull.bind(f"ipc://{folder}/hop" if transport == "ipc" else "tcp://127.0.0.1:*")
            push.connect(pull.last_endpoint.decode())
            if not push.poll(5000, zmq.POLLOUT):  # writable once connected
                raise RuntimeError(f"{transport}: the sender could not connect")
            body, sent = b"x" * size, 0
            while True:
                try:
                    push.send_multipart([HEADER, body], zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:  # the high-water mark: room again once the I/O thread moves some on
                    if not push.poll(500, zmq.POLLOUT):
                        break  # none for 0.5 s: everything on the way is full
            return sent
    finally:
        context.destroy(linger=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hwm", type=int, default=16, help="both high-water marks (a Flujo edge's queue)")
    args = parser.parse_args()
    print(f"messages one hop holds, high-water marks {args.hwm}")
    print("| body bytes | ipc | ipc, 4 KB socket buffers | tcp | tcp, 4 KB socket buffers |")
    print("|---|---|---|---|---|")
    for size in SIZES:
        row = [depth(size, args.hwm, transport, buffer) for transport in ("ipc", "tcp") for buffer in (0, 4096)]
        print(f"| {size} | " + " | ".join(str(count) for count in row) + " |")


if __name__ == "__main__":
    main()
