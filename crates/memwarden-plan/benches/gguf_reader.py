"""Times the Python `gguf` package's reader on a GGUF file, for a side-by-side ratio with
memwarden's estimate. Prints the mean seconds per read on the last line.

usage: python3 gguf_reader.py FILE [ITERATIONS]
"""

import sys
import time

from gguf import GGUFReader


def read(path):
    reader = GGUFReader(path, "r")
    arch = reader.fields["general.architecture"]
    name = bytes(arch.parts[arch.data[0]]).decode()
    weights = sum(int(t.n_bytes) for t in reader.tensors)
    return name, weights, len(reader.tensors), len(reader.fields)


def main():
    path = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    name, weights, tensors, fields = read(path)
    start = time.perf_counter()
    for _ in range(iterations):
        read(path)
    mean = (time.perf_counter() - start) / iterations
    print(f"{name} weights={weights} tensors={tensors} fields={fields}")
    print(f"{mean:.9f}")


if __name__ == "__main__":
    main()
