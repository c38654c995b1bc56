#!/usr/bin/env python3
# tests/unit/neuron/gguf_reference.py — independent reference for the model-file tests.
#
# Uses the `gguf` package (llama.cpp's own Python reader, pinned in tests/requirements.txt) so
# the C loader and dequantisers are checked against code Cortex did not write.
#
#   check                          exit 0 when gguf and numpy import
#   dequant TYPE IN OUT [...]      IN: raw blocks of ggml TYPE (e.g. q4_k); OUT: float32 values;
#                                  repeat the triple for more types
#   inspect GGUF DIR               DIR/meta.json: every metadata key/value as one JSON object;
#                                  DIR/tensors.txt: one line per tensor:
#                                  name ggml_type ne0,ne1,.. absolute_offset nbytes
#   rows GGUF OUT NAME:R,R.. ...   dequantised rows of tensors, float32, in the order given
# All binary output is little-endian float32. Opening a GGUF takes seconds in Python, so each
# command reads the file once.
import json
import sys


def main(argv):
    if not argv:
        sys.exit(__doc__ or "usage: see the header of this file")
    import numpy as np
    import gguf
    from gguf.quants import dequantize

    cmd = argv[0]
    if cmd == "check":
        return 0
    if cmd == "dequant":
        for i in range(1, len(argv), 3):
            qtype = gguf.GGMLQuantizationType[argv[i].upper()]
            raw = np.fromfile(argv[i + 1], dtype=np.uint8)
            if qtype == gguf.GGMLQuantizationType.F32:
                out = raw.view(np.float32)
            else:
                out = dequantize(raw, qtype)
            np.asarray(out, dtype="<f4").reshape(-1).tofile(argv[i + 2])
        return 0

    reader = gguf.GGUFReader(argv[1])
    if cmd == "inspect":
        with open(f"{argv[2]}/tensors.txt", "w", encoding="utf-8") as f:
            for t in reader.tensors:
                ne = ",".join(str(int(d)) for d in t.shape)
                f.write(f"{t.name} {int(t.tensor_type)} {ne} {int(t.data_offset)} {int(t.n_bytes)}\n")
        meta = {}
        for name, field in reader.fields.items():
            if name.startswith("GGUF."):
                continue  # header fields the reader exposes as pseudo-keys
            meta[name] = field.contents()
        with open(f"{argv[2]}/meta.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False)
        return 0
    if cmd == "rows":
        tensors = {t.name: t for t in reader.tensors}
        chunks = []
        for spec in argv[3:]:
            name, rows = spec.rsplit(":", 1)
            tensor = tensors[name]
            data = tensor.data
            data = data.reshape(-1, data.shape[-1])
            picked = np.ascontiguousarray(data[[int(r) for r in rows.split(",")]])
            if tensor.tensor_type in (gguf.GGMLQuantizationType.F32,
                                      gguf.GGMLQuantizationType.F16):
                chunks.append(picked.astype(np.float32).reshape(-1))
            else:
                chunks.append(np.asarray(dequantize(picked, tensor.tensor_type)).reshape(-1))
        np.concatenate(chunks).astype("<f4").tofile(argv[2])
        return 0
    sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
