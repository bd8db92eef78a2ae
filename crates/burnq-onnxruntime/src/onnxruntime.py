# Runs an ONNX model written by burnq with ONNX Runtime (called by burnq_onnxruntime::run).
# argv: model.onnx pixels.bin images out_dir. Reads N×1×28×28 u8 pixels, checks the model with
# the ONNX checker (full shape inference), runs it on the CPU in batches of 1000 and writes the
# outputs as raw little-endian arrays: logits_u8.bin (u8), fc2_acc.bin (i32), class.bin (i64).
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

model_path, pixels_path, images, out_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
onnx.checker.check_model(onnx.load(model_path), full_check=True)
session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
pixels = np.fromfile(pixels_path, dtype=np.uint8).reshape(images, 1, 28, 28)
names = ["logits_u8", "fc2_acc", "class"]
parts = [session.run(names, {"pixels": pixels[i : i + 1000]}) for i in range(0, images, 1000)]
for k, (name, dtype) in enumerate(zip(names, ["u1", "<i4", "<i8"])):
    np.concatenate([p[k] for p in parts]).astype(dtype).tofile(os.path.join(out_dir, name + ".bin"))
print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}")
