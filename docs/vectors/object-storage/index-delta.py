#!/usr/bin/env python3
"""Writes index-delta.hex from docs/volume-format.md's words ("Index deltas"), without
mailferry's code: a 5,000-byte file of zeros whose byte 4,100 becomes 0xAB and that
grows to 5,002 bytes, the last two 0xCD."""
import struct

old = bytes(5000)
new = bytearray(5002)
new[4100] = 0xAB
new[5000] = new[5001] = 0xCD
B = 4096
blocks = []
for n in range((len(new) + B - 1) // B):
    if new[n * B:(n + 1) * B] != old[n * B:(n + 1) * B]:
        blocks.append((n, bytes(new[n * B:(n + 1) * B])))
d = b"MFIXDLT1" + struct.pack(">QII", len(new), B, len(blocks))
d += b"".join(struct.pack(">Q", n) + b for n, b in blocks)
h = d.hex()
with open("index-delta.hex", "w") as f:
    f.write("\n".join(h[i:i + 64] for i in range(0, len(h), 64)) + "\n")
