# ONNX Runtime as the peer of `cargo xtask bench` (called by burnq_onnxruntime::{time, quantize_static}).
#
# quantize FLOAT.onnx CALIB.bin IMAGES OUT.onnx FORMAT PER_CHANNEL WEIGHT_TYPE
#   ONNX Runtime's own static int8 quantization of the float export: quant_pre_process (shape
#   inference and graph optimization), then quantize_static with MinMax calibration over the
#   IMAGES×1×28×28 u8 pixels of CALIB.bin (batches of 100), u8 activations, WEIGHT_TYPE (s8|u8)
#   weights, FORMAT (qoperator|qdq), per-channel weights when PER_CHANNEL is 1.
#
# time MODEL.onnx PIXELS.bin IMAGES OUT_DIR THREADS RUNS LATENCY_CALLS BATCH
#   For each thread count of THREADS (comma-separated): a session with intra_op_num_threads set
#   to it (inter-op 1, sequential, all graph optimizations), one warm-up batch, then as burnq's
#   bench does: the whole set in batches of BATCH (its classes are the predictions), LATENCY_CALLS
#   single-image calls after 20 untimed ones (µs each), RUNS passes in batches of 64, RUNS - 1
#   more whole-set passes. Prints one JSON object with the raw figures; writes the classes of
#   the first thread count to OUT_DIR/class.bin (i64).
import ctypes
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort


def pixels(path, images):
    return np.fromfile(path, dtype=np.uint8).reshape(images, 1, 28, 28)


def quantize(src, calib, images, dst, fmt, per_channel, weight_type):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x = pixels(calib, images)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixels": x[i : i + 100]} for i in range(0, images, 100)])

        def get_next(self):
            return next(self.batches, None)

    pre = dst + ".pre.onnx"
    try:
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(
            pre,
            dst,
            Reader(),
            quant_format={"qoperator": QuantFormat.QOperator, "qdq": QuantFormat.QDQ}[fmt],
            per_channel=per_channel == "1",
            activation_type=QuantType.QUInt8,
            weight_type={"s8": QuantType.QInt8, "u8": QuantType.QUInt8}[weight_type],
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        if os.path.exists(pre):
            os.remove(pre)
    print(f"onnxruntime {ort.__version__}")


def runtime():
    """ONNX Runtime's version, and whether tools/ort-avx2's CPUID mask (an LD_PRELOAD library
    exporting `cpuidmask_hits`) made it see an AVX2-only CPU."""
    try:
        hits = ctypes.c_long.in_dll(ctypes.CDLL(None), "cpuidmask_hits").value
    except ValueError:
        return f"onnxruntime {ort.__version__}"
    if hits == 0:
        return f"onnxruntime {ort.__version__} (CPUID mask loaded, but no call emulated: it sees the whole CPU)"
    return f"onnxruntime {ort.__version__} (AVX2 only: tools/ort-avx2, {hits} cpuid calls emulated)"


def timing(model, px, images, out_dir, threads, runs, calls, batch):
    x = pixels(px, images)
    results = []
    classes = None
    for t in threads:
        so = ort.SessionOptions()
        so.intra_op_num_threads = t
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])

        def run(chunk):
            return session.run(["class"], {"pixels": chunk})[0]

        def whole(size):
            start = time.perf_counter()
            parts = [run(x[i : i + size]) for i in range(0, images, size)]
            return images / (time.perf_counter() - start), parts

        run(x[:batch])  # warm-up: session allocations for the largest batch
        first, parts = whole(batch)
        if classes is None:
            classes = np.concatenate(parts).astype("<i8")
        latencies = []
        for i in range(calls + 20):
            img = x[i % images : i % images + 1]
            start = time.perf_counter()
            run(img)
            if i >= 20:
                latencies.append((time.perf_counter() - start) * 1e6)
        b64 = [whole(64)[0] for _ in range(runs)]
        full = [first] + [whole(batch)[0] for _ in range(runs - 1)]
        results.append(
            {
                "threads": t,
                "full_images_per_s": full,
                "batch64_images_per_s": b64,
                "latency_us": latencies,
            }
        )
    classes.tofile(os.path.join(out_dir, "class.bin"))
    print(json.dumps({"versions": runtime(), "timings": results}))


if sys.argv[1] == "quantize":
    quantize(*sys.argv[2:4], int(sys.argv[4]), *sys.argv[5:9])
elif sys.argv[1] == "time":
    a = sys.argv[2:]
    timing(
        a[0],
        a[1],
        int(a[2]),
        a[3],
        [int(t) for t in a[4].split(",")],
        int(a[5]),
        int(a[6]),
        int(a[7]),
    )
else:
    sys.exit(f"unknown mode {sys.argv[1]}")
