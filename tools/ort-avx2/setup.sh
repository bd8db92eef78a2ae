#!/usr/bin/env bash
# Builds a Python launcher whose ONNX Runtime sees an AVX2-only CPU (see README.md).
#   tools/ort-avx2/setup.sh PYTHON OUT
# PYTHON: an interpreter with onnxruntime (e.g. ~/.cache/burnq-venv/bin/python);
# OUT: a new folder; OUT/python is then the launcher for `cargo xtask bench --python`.
# Needs cc (gcc or clang) and objdump (binutils).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 PYTHON OUT" >&2; exit 2; }
python=$(command -v "$1") || { echo "$0: no such interpreter: $1" >&2; exit 1; }
# Absolute, but not through the venv's symlink (the venv's python finds its packages by its path).
case $python in /*) ;; *) python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")" ;; esac
# Both paths go into a shell script and LD_PRELOAD (split on spaces and colons): plain ones only.
for path in "$python" "$2"; do
  case $path in *[!A-Za-z0-9_./+-]*) echo "$0: use a path of letters, digits and _./+- only: $path" >&2; exit 1 ;; esac
done
out=$(mkdir -p "$2" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
for tool in cc objdump; do
  command -v $tool >/dev/null || { echo "$0: $tool is needed (apt-get install build-essential binutils)" >&2; exit 1; }
done
package=$("$python" -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))') ||
  { echo "$0: $python cannot import onnxruntime" >&2; exit 1; }

cc -O2 -shared -fPIC -o "$out/cpuidmask.so" "$here/cpuidmask.c"
rm -rf "$out/site" && mkdir -p "$out/site"
cp -r "$package" "$out/site/onnxruntime"
"$python" "$here/patch_cpuid.py" "$out"/site/onnxruntime/capi/*.so*

cat >"$out/python" <<LAUNCHER
#!/bin/sh
# $python with ONNX Runtime from $out/site, CPUID masked to AVX2 (tools/ort-avx2).
export LD_PRELOAD="$out/cpuidmask.so\${LD_PRELOAD:+:\$LD_PRELOAD}"
export PYTHONPATH="$out/site\${PYTHONPATH:+:\$PYTHONPATH}"
exec "$python" "\$@"
LAUNCHER
chmod +x "$out/python"

# Self-check: the patched package is the one imported, a session runs, and cpuid was emulated.
"$out/python" - "$out" <<'CHECK'
import ctypes, os, sys
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
assert ort.__file__.startswith(os.path.join(sys.argv[1], "site", "")), f"imported {ort.__file__}, not the patched copy"
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "check", [x],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
y = s.run(None, {"x": np.array([[-1, 2, -3, 4]], np.float32)})[0]
assert y.tolist() == [[0, 2, 0, 4]], y
hits = ctypes.c_long.in_dll(ctypes.CDLL(None), "cpuidmask_hits").value
assert hits > 0, "no cpuid call was emulated: ONNX Runtime was not patched"
print(f"ort-avx2: onnxruntime {ort.__version__} from {os.path.dirname(ort.__file__)}; {hits} cpuid calls emulated")
CHECK
echo "ort-avx2: launcher $out/python"
